# SPDX-License-Identifier: GPL-2.0-or-later
"""The ``kexecd`` command line: its arguments, and the command they run.

:func:`kexecd.cli.main.main` imports this module only when the running
daemon did not answer ``kexecd status`` (:mod:`kexecd.cli.quick`): building
the parser, with argparse's help formatting, is a start-up cost of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kexecd import __version__
from kexecd.paths import DEFAULT_CONFIG, DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR, DISTRO_RULES

__all__ = ["ROOT_ONLY", "build", "run"]


def _address(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r}") from None


# Commands that read /etc/kexecd.conf leave these options unset: the file's
# value (or its default) applies unless the option is given.
def _default(value: object, config: bool) -> str:
    return f"default: the config's, else {value}" if config else f"default {value}"


def _state_dir(p: argparse.ArgumentParser, config: bool = False) -> None:
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None if config else DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"where 'kexecd load' keeps the snapshot ({_default(DEFAULT_STATE_DIR, config)})",
    )


def _root(p: argparse.ArgumentParser, config: bool = False) -> None:
    p.add_argument(
        "--root",
        default=None if config else "/",
        metavar="DIR",
        help=f"read /proc and /sys under this directory ({_default('/', config)})",
    )


def _runtime_dir(p: argparse.ArgumentParser, config: bool = False) -> None:
    p.add_argument(
        "--runtime-dir",
        type=Path,
        default=None if config else DEFAULT_RUNTIME_DIR,
        metavar="DIR",
        help=f"the daemon's state.json and socket ({_default(DEFAULT_RUNTIME_DIR, config)})",
    )


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"settings (TOML; default {DEFAULT_CONFIG}, which may be absent); options win",
    )


def _image_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """load, adopt, refresh: what puts the crash kernel in place."""
    p = sub.add_parser(
        "load",
        help="run a 'kexec -p' command and keep what it loaded",
        description="Run a kexec-tools command that loads a crash kernel (-p), capture "
        "the exact kexec_load arguments, and keep them in the state directory.",
    )
    _state_dir(p)
    p.add_argument("kexec", nargs=argparse.REMAINDER, help="-- kexec -p KERNEL ...")

    _adopt_command(sub)

    p = sub.add_parser(
        "refresh",
        help="bring the loaded crash kernel's header up to date",
        description="Build the ELF core header for the system now; when it differs from "
        "the loaded one, reload only the header (and purgatory's digest).",
    )
    _config(p)
    _state_dir(p, config=True)
    _root(p, config=True)
    p.add_argument("--dry-run", action="store_true", help="say what would change; load nothing")

    p = sub.add_parser(
        "grow",
        help="make room in the header for more program headers, ahead of a scale-up",
        description="Move the loaded crash kernel's ELF core header to a hole of the crash "
        "kernel reservation with room for N program headers (one per CPU, per RAM range, "
        "and two more), rewriting elfcorehdr=, the crash kernel's memory map and "
        "purgatory's digest; one kexec_load. Nothing is done if it has that room already.",
    )
    _config(p)
    _state_dir(p, config=True)
    _root(p, config=True)
    p.add_argument(
        "--capacity", type=_positive, required=True, metavar="N", help="program headers"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would change; load nothing")


def _adopt_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """adopt: take over what the distro loaded."""
    p = sub.add_parser(
        "adopt",
        help="take over the crash kernel the distro loaded",
        description="Replay the command the distro loaded the crash kernel with (kdump-tools' "
        "kexec_cmd, or COMMAND) under the tracer, keep what it loads, and reconcile at once. "
        "Nothing in the distro's files is changed.",
    )
    p.add_argument(
        "--kexec-cmd",
        type=Path,
        metavar="FILE",
        help="the distro's record of its kexec command (default: the config's kexec_cmd, "
        "else kdump-tools' $KDUMP_COREDIR/kexec_cmd, /var/crash/kexec_cmd)",
    )
    _config(p)
    _state_dir(p, config=True)
    _root(p, config=True)
    p.add_argument(
        "command_",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="replay this command instead of the distro's record",
    )


def _positive(text: str) -> int:
    try:
        n = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= n <= 1 << 20:
        raise argparse.ArgumentTypeError(f"{n} is not between 1 and 1048576")
    return n


def _distro_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """mask, unmask: the distro's per-event reload rule."""
    p = sub.add_parser(
        "mask",
        help="mask the distro's per-event reload rule (kexecd.service runs it)",
        description="Mask the distro's udev rule that reloads the whole crash kernel on every "
        "hotplug event, with a symlink to /dev/null in /run/udev/rules.d; 'kexecd unmask' "
        "removes it. Rules: " + ", ".join(DISTRO_RULES) + ".",
    )
    _runtime_dir(p)
    _root(p)
    p = sub.add_parser(
        "unmask",
        help="remove the masks 'kexecd mask' made",
        description="Remove the /run/udev/rules.d masks that 'kexecd mask' recorded, and only "
        "those, then reload udev's rules.",
    )
    _runtime_dir(p)
    _root(p)


def _service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """run, status: the daemon and its report."""
    p = sub.add_parser(
        "run",
        help="the daemon: refresh the crash kernel on CPU and memory hotplug",
        description="Listen to cpu and memory uevents and keep the loaded crash kernel's "
        "header current. Settings come from /etc/kexecd.conf (TOML); options override them.",
    )
    _config(p)
    p.add_argument("--state-dir", type=Path, metavar="DIR")
    p.add_argument("--runtime-dir", type=Path, metavar="DIR", help="state.json and the socket")
    p.add_argument("--root", type=Path, metavar="DIR")
    p.add_argument("--source", choices=["udev", "kernel"])
    p.add_argument("--verbose", "-v", action="store_true")

    p = sub.add_parser(
        "status",
        help="is a crash kernel loaded, and is its header current?",
        description="Exit 0: loaded and current; 1: stale; 2: error; 3: no crash kernel.",
    )
    _config(p)
    _state_dir(p, config=True)
    _runtime_dir(p, config=True)
    _root(p, config=True)
    p.add_argument("--json", action="store_true", help="print JSON")


def _inspect_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """inspect: a header, a vmcore head, or the system's header."""
    p = sub.add_parser(
        "inspect",
        help="show an ELF core header, or the one kexecd would build for this system",
        description="Show an ELF core header (an elfcorehdr segment, a capture, the head "
        "of a vmcore), or with --system the header kexecd would build now.",
    )
    p.add_argument("file", nargs="?", help="the header file to show")
    p.add_argument("--system", action="store_true", help="build the header for the system")
    p.add_argument(
        "--loaded",
        action="store_true",
        help="the header loaded now (the state directory's), and where it lives",
    )
    _state_dir(p)
    _root(p)
    p.add_argument(
        "--template",
        metavar="FILE",
        help="the header loaded earlier: take kernel text, vmcoreinfo, backup remap and "
        "page_offset from it instead of /proc/kcore and /proc/kallsyms",
    )
    p.add_argument(
        "--backup-start",
        type=_address,
        metavar="ADDR",
        help="without --template: where kexec-tools put the backup segment",
    )
    p.add_argument(
        "--kexec-tools",
        type=_kexec_tools_version,
        metavar="VERSION",
        help="build by the rules of this kexec-tools version (2.0.20 leaves 'System RAM "
        "(kmem)' out; default: those of 2.0.22 and later)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write the raw header here")
    p.add_argument("--json", action="store_true", help="print JSON")


def _kexec_tools_version(text: str) -> str:
    from kexecd.system.kexectools import is_version  # the engine: only when given

    if not is_version(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a kexec-tools version like 2.0.25")
    return text


def build() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(
        prog="kexecd",
        description="Keep the kdump crash kernel's ELF core header current across hotplug.",
    )
    parser.add_argument("--version", action="version", version=f"kexecd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _image_commands(sub)
    _distro_commands(sub)
    _service_commands(sub)
    _inspect_command(sub)
    return parser


# What needs root: the state directory is root's (0700), kexec_load needs
# CAP_SYS_BOOT, the udev rules directory in /run is root's.
ROOT_ONLY = ("load", "adopt", "mask", "unmask", "refresh", "grow", "run", "status")


def _inspect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from kexecd.cli import inspect

    if [bool(args.file), args.system, args.loaded].count(True) != 1:
        parser.error("inspect takes one of FILE, --system and --loaded")
    if not args.system and (args.template or args.output or args.backup_start is not None):
        parser.error("--template, --backup-start and --output go with --system")
    opts = inspect.Options(
        file=args.file,
        system=args.system,
        loaded=args.state_dir if args.loaded else None,
        root=args.root,
        template=args.template,
        backup_start=args.backup_start,
        kexec_tools=args.kexec_tools,
        output=args.output,
        as_json=args.json,
    )
    return inspect.run(opts)


def _left_to_argparse(given: list[str]) -> bool:
    # kexecd.cli.quick.run did not ask the daemon: the arguments were not all
    # in their plain forms (an abbreviation, --opt=-value).
    from kexecd.cli import quick

    return given[:1] != ["status"] or quick.options(given[1:]) is None


def run(given: list[str]) -> int:
    """Parse the arguments ``given`` (argparse exits on bad ones), run the command.

    :returns: the command's exit code.
    """
    parser = build()
    args = parser.parse_args(given)
    if args.command in ROOT_ONLY and os.geteuid() != 0:
        print(
            f"kexecd {args.command}: run as root (the state directory is root's, and "
            "kexec_load needs CAP_SYS_BOOT)",
            file=sys.stderr,
        )
        return 2
    if args.command == "status" and _left_to_argparse(given):
        from kexecd.cli import quick  # the forms quick.run leaves to argparse

        rc = quick.status(args.config, args.state_dir, args.root, args.runtime_dir, args.json)
        if rc is not None:
            return rc
    # Each command imports what it uses: start-up is most of a short command.
    from kexecd.cli import commands

    if args.command == "load":
        argv = args.kexec[1:] if args.kexec[:1] == ["--"] else args.kexec
        return commands.load(argv, args.state_dir)
    if args.command in ("adopt", "refresh", "grow", "status"):
        cfg = commands.settings(
            args.command,
            args.config,
            state_dir=args.state_dir,
            root=args.root,
            runtime_dir=getattr(args, "runtime_dir", None),
        )
        if cfg is None:
            return 2
        if args.command == "refresh":
            return commands.refresh(cfg, dry_run=args.dry_run)
        if args.command == "grow":
            return commands.refresh(cfg, dry_run=args.dry_run, grow=args.capacity)
        if args.command == "status":
            return commands.status(cfg, args.json)
        command = args.command_[1:] if args.command_[:1] == ["--"] else args.command_
        return commands.adopt(cfg, args.kexec_cmd, command)
    if args.command in ("mask", "unmask"):
        how = commands.mask if args.command == "mask" else commands.unmask
        from kexecd.system.root import Root

        return how(Root(args.root), args.runtime_dir)
    if args.command == "run":
        return commands.run(
            args.config,
            state_dir=args.state_dir,
            runtime_dir=args.runtime_dir,
            root=args.root,
            source=args.source,
            verbose=args.verbose,
        )
    if args.command == "inspect":
        return _inspect(parser, args)
    parser.print_help(sys.stderr)
    return 2
