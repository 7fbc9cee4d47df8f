# SPDX-License-Identifier: GPL-2.0-or-later
"""The kernel's command-line words: how it splits a line, and what kexecd appends.

Arch-neutral: the x86 boot parameters and the arm64 DTB hold the same kind of
line (lib/cmdline.c, kernel/params.c).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kexecd.errors import CmdlineError

__all__ = ["appended", "check_word", "has", "without_tail", "words"]

_WORD = re.compile(r"[A-Za-z0-9_.,:/+-]+(=[A-Za-z0-9_.,:/+@-]*)?")
MAX_WORD = 128
# lib/ctype.c: what the kernel's isspace() takes (0xa0 too, in its latin-1 table).
_SPACE = frozenset(" \t\n\v\f\r\xa0")


def words(text: str) -> list[str]:
    """The line's parameters as the kernel splits them (lib/cmdline.c next_arg():
    whitespace outside double quotes)."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch in _SPACE and not quoted:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def _name(word: str) -> str:
    # kernel/params.c parameqn(): '-' and '_' are the same in a name.
    return word.split("=", 1)[0].strip('"').replace("-", "_")


def has(text: str, name: str) -> bool:
    """Whether a parameter named ``name`` (with or without a value) is in the line."""
    want = _name(name)
    return any(_name(w) == want for w in words(text))


def check_word(word: object) -> str:
    """``word`` if it is one plain kernel parameter (``name`` or ``name=value``,
    no quotes, no spaces).

    :raises CmdlineError: anything else.
    """
    if not isinstance(word, str) or len(word) > MAX_WORD or not _WORD.fullmatch(word):
        raise CmdlineError(f"{word!r:.60} is not a plain kernel parameter (name or name=value)")
    return word


def appended(text: str, word: str) -> str:
    """The line with ``word`` appended as its last parameter.

    :raises CmdlineError: ``word`` is not a plain parameter, or the line
        hands what follows ``--`` to init (a word appended would go there).
    """
    check_word(word)
    if "--" in words(text):
        raise CmdlineError(
            f"the command line passes arguments to init after '--', so {word} "
            "would not reach the kernel"
        )
    return f"{text} {word}" if text else word


def without_tail(text: str, tail: Sequence[str]) -> str:
    """The line without ``tail``, words appended at its end (by kexecd); the
    line as it is if it does not end with them."""
    ws = words(text)
    if tail and ws[-len(tail) :] == list(tail):
        return " ".join(ws[: -len(tail)])
    return text
