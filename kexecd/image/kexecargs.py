# SPDX-License-Identifier: GPL-2.0-or-later
"""A kexec-tools command with words appended to the crash kernel's command line.

The kernel builds a ``kexec_file_load`` image's boot parameters from the
line kexec-tools hands it, so for such an image kexecd cannot patch a
segment as it does for ``kexec_load``: it amends the *command* it runs again
for a whole reload (:mod:`kexecd.image.rerun`). kexec-tools takes the line
from ``--command-line=`` or ``--append=``, one option under two names whose
last occurrence wins (``OPT_APPEND`` in kexec/arch/x86_64/kexec-bzImage64.c
and kexec/arch/arm64/kexec-arm64.c, kexec-tools 2.0.25 and 2.0.29; getopt_long
takes an unambiguous abbreviation too). So the command must give it exactly
once, by its full name, and that value gets the words.

A distro's record (kdump-tools' ``kexec_cmd``) is a shell line that
kdump-config ``eval``\\s. It is rewritten only when it holds nothing but
words and quotes: anything the shell would expand or act on is refused,
since a line re-quoted by kexecd would no longer mean the same.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from kexecd.errors import CmdlineError
from kexecd.kparams import appended, has, without_tail

__all__ = ["LINE_OPTIONS", "amended_line", "with_words"]

LINE_OPTIONS = ("--command-line", "--append")
# What a shell would expand or act on, outside and inside double quotes.
_SHELL = frozenset("$`\\;|&<>(){}*?[~\n")


def with_words(args: Sequence[str], add: Sequence[str], drop: Sequence[str] = ()) -> list[str]:
    """``args`` (kexec-tools' command, its program first) with ``add``
    appended to the value of its one command-line option; a word already on
    the line is not added again.

    :param drop: words kexecd appended before, taken off the line's end first.

    :raises CmdlineError: the option is missing or given more than once, or
        a word cannot be appended (not a plain parameter, or after ``--``).
    """
    names = [a.split("=", 1)[0] for a in args]
    hits = [i for i, n in enumerate(names) if n in LINE_OPTIONS]
    short = [n for n in names if _abbreviates(n)]
    if short:
        raise CmdlineError(f"the command abbreviates {short[0]}: kexecd amends only the full name")
    if len(hits) != 1:
        raise CmdlineError(
            f"the command gives the crash kernel's command line {len(hits)} times "
            "(--command-line or --append), not once"
        )
    out = list(args)
    i = hits[0]
    opt, eq, value = out[i].partition("=")
    if not eq:  # "--append VALUE": the value is the next word
        if i + 1 >= len(out):
            raise CmdlineError(f"the command's {opt} has no value")
        i, value = i + 1, out[i + 1]
    value = without_tail(value, drop)
    for word in add:
        if not has(value, word):
            value = appended(value, word)
    out[i] = f"{opt}={value}" if eq else value
    return out


def _abbreviates(name: str) -> bool:
    return (
        len(name) > 2
        and name not in LINE_OPTIONS
        and any(o.startswith(name) for o in LINE_OPTIONS)
    )


def amended_line(line: str, add: Sequence[str], drop: Sequence[str] = ()) -> str:
    """A distro's recorded shell line (``eval``\\ed as kdump-config does) with
    ``add`` appended to the crash kernel's command line, re-quoted.

    :raises CmdlineError: the line holds shell syntax other than words and
        quotes, its quotes do not close, or :func:`with_words` refuses.
    """
    bad = sorted(_SHELL.intersection(line))
    if bad:
        raise CmdlineError(
            f"the recorded command holds shell syntax ({' '.join(map(repr, bad))}) that "
            "kexecd does not rewrite"
        )
    try:
        args = shlex.split(line)
    except ValueError as e:
        raise CmdlineError(f"the recorded command does not parse as shell words ({e})") from None
    return shlex.join(with_words(args, add, drop))
