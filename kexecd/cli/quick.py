# SPDX-License-Identifier: GPL-2.0-or-later
"""``kexecd status`` made by the running daemon: the short way.

Start-up is most of a short command, and most of ``kexecd status``'s
start-up is importing: the C core, the refresh engine, and even the
dataclasses of the state and the settings. When a daemon runs, all of it is
loaded already; this module asks it, over its control socket, for the status
this command would print (``{"cmd": "report", ...}``), and imports nothing
more than that takes (no ``dataclasses``, no engine). The daemon makes it by
the same function, :func:`kexecd.cli.status.gather`, from the same files read
now, for the settings this command was given (it refuses others:
:func:`kexecd.cli.status.serve`), so it prints the same, exit code included.

When there is no daemon to ask (no socket, a refused connection, another
version's daemon), or it cannot answer (other directories, a writer holding
the state directory's lock, no answer within :data:`ASK_TIMEOUT` seconds),
:func:`status` returns ``None`` and the command makes the status itself.
"""

from __future__ import annotations

# The socket module's C half: the module itself builds its enums at import,
# which is most of what it would cost this command.
import _socket
import json
import os
import stat
import sys

from kexecd.paths import DEFAULT_CONFIG, DEFAULT_RUNTIME_DIR

__all__ = ["ASK_TIMEOUT", "options", "run", "status"]

# As long as status waits for the state directory's lock without a daemon.
ASK_TIMEOUT = 10.0
SOCKET = "kexecd.sock"  # kexecd.service.statefile.SOCKET, without its imports
MAX_ANSWER = 16 << 20


# kexecd status's options that take a value (kexecd.cli.main), by keyword.
_VALUED = {
    "--config": "config",
    "--state-dir": "state_dir",
    "--runtime-dir": "runtime_dir",
    "--root": "root",
}


def options(args: list[str]) -> dict[str, str | bool | None] | None:
    """``kexecd status``'s options from its arguments in their plain forms
    (``--json``, ``--root DIR``, ``--root=DIR``: no abbreviation, no value
    that is empty or starts with a dash), as :func:`status` takes them;
    ``None`` for any other form, left to argparse (which builds its parser
    first: a start-up cost of its own).
    """
    got: dict[str, str | bool | None] = {
        "config": str(DEFAULT_CONFIG),
        "state_dir": None,
        "root": None,
        "runtime_dir": None,
        "as_json": False,
    }
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if args[i] == "--json":
            got["as_json"] = True
        elif name not in _VALUED:
            return None
        else:
            if not eq:
                i += 1
                if i == len(args):
                    return None
                value = args[i]
            if not value or value.startswith("-"):
                return None
            got[_VALUED[name]] = value
        i += 1
    return got


def run(args: list[str]) -> int | None:
    """``kexecd status ARGS`` answered by the daemon: its exit code, or
    ``None`` (nothing printed) when the arguments are not all plain
    (:func:`options`) or no daemon answers (:func:`status`)."""
    got = options(args)
    if got is None:
        return None
    return status(
        str(got["config"]),
        _text(got["state_dir"]),
        _text(got["root"]),
        _text(got["runtime_dir"]),
        got["as_json"] is True,
    )


def _text(value: str | bool | None) -> str | None:
    return value if isinstance(value, str) else None


def status(
    config: os.PathLike[str] | str,
    state_dir: os.PathLike[str] | str | None,
    root: os.PathLike[str] | str | None,
    runtime_dir: os.PathLike[str] | str | None,
    as_json: bool,
) -> int | None:
    """Print the status the daemon made, and return its exit code; ``None``
    (nothing printed) when there is no daemon to answer.

    :param config: ``--config``; the other paths: the options, ``None`` when
        not given.
    """
    runtime = runtime_dir if runtime_dir is not None else _configured_runtime_dir(config)
    if runtime is None:
        return None
    request = {
        "cmd": "report",
        "config": os.path.abspath(config),
        "state_dir": _absolute(state_dir),
        "root": _absolute(root),
        "runtime_dir": _absolute(runtime_dir),
        "json": as_json,
    }
    reply = _ask(os.path.join(runtime, SOCKET), json.dumps(request).encode() + b"\n")
    if reply is None:
        return None
    code, output = reply.get("exit_code"), reply.get("output")
    if reply.get("ok") is not True or not isinstance(output, str) or code not in (0, 1, 2, 3):
        return None
    sys.stdout.write(output + "\n")
    return int(str(code))


def _absolute(path: os.PathLike[str] | str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def _configured_runtime_dir(config: os.PathLike[str] | str) -> str | None:
    # Where the daemon's socket is: the config's runtime_dir, else the
    # default. Only a guess at which socket to try: the daemon reads the
    # file again, checked, and answers only for its own directories.
    try:
        fd = os.open(config, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return str(DEFAULT_RUNTIME_DIR)
    except OSError:
        return None
    try:  # a regular file only (not a FIFO that never ends), as load_config reads it
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, 1 << 20)
    except OSError:
        return None
    finally:
        os.close(fd)
    if b"runtime_dir" not in text:
        return str(DEFAULT_RUNTIME_DIR)
    import tomllib

    try:
        value = tomllib.loads(text.decode()).get("runtime_dir", str(DEFAULT_RUNTIME_DIR))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) else None


def _ask(path: str, request: bytes) -> dict[str, object] | None:
    try:
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    except OSError:
        return None
    data = b""
    try:
        s.settimeout(ASK_TIMEOUT)
        s.connect(path)
        s.sendall(request)
        while not data.endswith(b"\n") and len(data) <= MAX_ANSWER:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError:  # no socket, refused (a daemon gone), timed out
        return None
    finally:
        s.close()
    try:
        reply = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return reply if isinstance(reply, dict) else None
