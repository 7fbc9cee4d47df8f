# SPDX-License-Identifier: GPL-2.0-or-later
"""The control socket's clients, served from the daemon's loop without blocking it.

One JSON object per line each way: ``{"cmd": "status"}``, ``{"cmd":
"refresh"}`` or ``{"cmd": "report", ...}`` (``kexecd status`` made by the
daemon, whose engine is loaded already: :mod:`kexecd.cli.quick`). Each
client is non-blocking and lives in the daemon's loop (its deadline a timer
there); a request is at most :data:`MAX_REQUEST`
bytes and must arrive within :data:`DEADLINE` seconds, and at most
:data:`MAX_CLIENTS` are served at once.
Nothing a client sends or fails to send can stall or end the daemon: a
malformed request gets an error reply, a slow or silent one is dropped at its
deadline, a vanished one is closed. Only root may ask (``SO_PEERCRED``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from kexecd.service.loop import Loop, Timer

__all__ = [
    "COMMANDS",
    "DEADLINE",
    "MAX_CLIENTS",
    "MAX_REQUEST",
    "Client",
    "RequestError",
    "Server",
    "parse",
    "parse_request",
]

COMMANDS = ("status", "refresh", "report")
MAX_REQUEST = 4096
MAX_REPLY = 1 << 20
DEADLINE = 2.0
MAX_CLIENTS = 16


class RequestError(ValueError):
    """A request that is not one of :data:`COMMANDS` as a JSON object."""


def parse(line: bytes) -> str:
    """The command of one request line.

    :raises RequestError: not JSON, not an object, or an unknown command.
    """
    return parse_request(line)[0]


def parse_request(line: bytes) -> tuple[str, dict[str, object]]:
    """The command of one request line, and the whole request (its other
    fields are the command's to check).

    :raises RequestError: not JSON, not an object, or an unknown command.
    """
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        raise RequestError('not a JSON object; send {"cmd": "status"}') from None
    if not isinstance(req, dict):
        raise RequestError('not a JSON object; send {"cmd": "status"}')
    cmd = req.get("cmd")
    if cmd not in COMMANDS:
        raise RequestError(f"unknown command {cmd!r:.40}; use status, refresh or report")
    return str(cmd), req


def peer_uid(conn: socket.socket) -> int | None:
    """The connecting process's uid, or ``None`` if it is gone."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


@dataclass
class Client:
    """One connection: what it sent so far, what is left to send, its deadline."""

    conn: socket.socket
    deadline: float
    inbox: bytes = b""
    outbox: bytes = b""
    done: bool = False  # the reply is queued; close once it is sent
    closed: bool = field(default=False, repr=False)
    timer: Timer | None = field(default=None, repr=False)  # its deadline in the loop

    def receive(self) -> bytes | None:
        """Read what is there; the request line once complete, else ``None``.

        Sets ``done`` with an error reply when the request is too long or the
        client hung up before a whole line.
        """
        try:
            data = self.conn.recv(MAX_REQUEST + 1)
        except BlockingIOError:
            return None
        except OSError:
            self.close()
            return None
        if not data:
            self.close()
            return None
        self.inbox += data
        line, nl, _ = self.inbox.partition(b"\n")
        if nl:
            return line[:MAX_REQUEST]
        if len(self.inbox) > MAX_REQUEST:
            self.reply({"error": f"request longer than {MAX_REQUEST} bytes"})
        return None

    def reply(self, message: dict[str, object]) -> None:
        """Queue the reply; :meth:`send` writes it as the socket allows."""
        data = json.dumps(message).encode() + b"\n"
        if len(data) > MAX_REPLY:
            data = b'{"error": "reply too large"}\n'
        self.outbox = data
        self.done = True

    def send(self) -> None:
        """Write what the socket takes now; close once the reply is out."""
        try:
            n = self.conn.send(self.outbox)
        except BlockingIOError:
            return
        except OSError:  # the client left (EPIPE, ECONNRESET)
            self.close()
            return
        self.outbox = self.outbox[n:]
        if not self.outbox:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.conn.close()


class Server:
    """The listening socket and its clients, in the daemon's loop.

    :param answer: the reply to an allowed, parsed command (and its request).
    """

    def __init__(
        self,
        path: Path,
        loop: Loop,
        answer: Callable[[str, dict[str, object]], dict[str, object]],
    ) -> None:
        self.path = path
        self.loop = loop
        self.answer = answer
        self.clients: list[Client] = []
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)
        loop.add_reader(self.sock, self.on_connect)

    def on_connect(self) -> None:
        """Accept one client; watch it (or refuse it) without waiting on it."""
        try:
            conn, _ = self.sock.accept()
        except OSError:  # BlockingIOError, or the client left already
            return
        conn.setblocking(False)
        client = Client(conn, self.loop.clock() + DEADLINE)
        if len(self.clients) >= MAX_CLIENTS:
            client.close()
            return
        self.clients.append(client)
        client.timer = self.loop.call_at(client.deadline, partial(self._drop, client))
        serve = partial(self.on_client, client)
        if peer_uid(conn) != 0:
            client.reply({"error": "permission denied: root only"})
            self.loop.add_writer(conn, serve)
        else:
            self.loop.add_reader(conn, serve)

    def on_client(self, client: Client) -> None:
        """Read the request, or write the reply, as far as the socket allows now."""
        if client.done:
            client.send()
        else:
            line = client.receive()
            if line is not None:
                try:
                    client.reply(self.answer(*parse_request(line)))
                except RequestError as e:
                    client.reply({"error": str(e)})
            if client.done and not client.closed:
                self.loop.to_writer(client.conn, partial(self.on_client, client))
                client.send()
        if client.closed:
            self._drop(client)

    def _drop(self, client: Client) -> None:
        # Done, gone, or past its deadline (silent, slow, or not reading).
        self.loop.remove(client.conn)
        self.loop.cancel(client.timer)
        if client in self.clients:
            self.clients.remove(client)
        client.close()

    def close(self) -> None:
        """Drop every client, close the socket, remove its file."""
        for client in list(self.clients):
            self._drop(client)
        self.loop.remove(self.sock)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
