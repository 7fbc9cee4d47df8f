# SPDX-License-Identifier: GPL-2.0-or-later
"""README.md stays short, every relative link in the documentation resolves,
and the two commands README.md gives are the ones CI and the scripts run.

Anchors are checked against the headings of the target file, turned into ids
the way GitHub does (lower case, punctuation dropped, spaces to hyphens).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]

SETUP = "bash scripts/setup --demo"
TEST = "bash scripts/test"

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _slug(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the headings of ``page`` (repeats get ``-1``, ...)."""
    seen: dict[str, int] = {}
    ids = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_slug_follows_github() -> None:
    assert _slug("Monitoring: Prometheus, alerts and `status --json`") == (
        "monitoring-prometheus-alerts-and-status---json"
    )
    assert _slug("Why setuptools with `cffi_modules`") == "why-setuptools-with-cffi_modules"
    assert _slug("Two commands (fresh Debian 12, as root)") == (
        "two-commands-fresh-debian-12-as-root"
    )


def test_readme_is_at_most_250_lines() -> None:
    assert len(README.read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.is_file(), f"{page.name}: {target}: no such file"
        assert REPO in dest.parents, f"{page.name}: {target}: outside the repository"
        if anchor:
            assert dest.suffix == ".md", f"{page.name}: {target}: anchor in a non-markdown file"
            assert anchor in anchors(dest), f"{page.name}: {target}: no such heading"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(README)}
    for page in PAGES[1:]:
        assert page in linked, f"README.md does not link {page.name}"


def test_readme_gives_the_commands_ci_and_the_scripts_run() -> None:
    commands = [
        line.strip() for line in README.read_text().splitlines() if line.startswith("    ")
    ]
    assert SETUP in commands and TEST in commands
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "bash scripts/setup" in ci and TEST in ci
    assert ci.index("bash scripts/setup") < ci.index(TEST)
    # scripts/setup runs the demonstration when given --demo.
    setup = (REPO / "scripts" / "setup").read_text()
    demo = re.search(r'"--demo" \]; then\n\t(.*)\n', setup)
    assert demo and demo.group(1) == ".venv/bin/python -m tests.vm.demo"
    assert (REPO / "scripts" / "test").is_file()
    make = (REPO / "Makefile").read_text()
    assert "test:\n\tbash scripts/test\n" in make and "setup:\n\tbash scripts/setup\n" in make


def test_no_page_refers_outside_the_repository() -> None:
    for page in PAGES:
        text = page.read_text()
        for outside in ("../shared/", "FIELD-NOTES", "/work/"):
            assert outside not in text, f"{page.name} refers to {outside}"
