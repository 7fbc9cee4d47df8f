# SPDX-License-Identifier: GPL-2.0-or-later
"""The test bed's agent: runs inside the guest, answers the host over virtio-serial.

One JSON object per line each way. Requests:
  {"op": "run", "argv": [...], "input": str|null, "timeout": s, "env": {...}}
      -> {"rc": int|null, "stdout": str, "stderr": str, "seconds": float, "timeout": bool}
  {"op": "panic"} -> {"ok": true}, then the kernel is crashed with sysrq.
  {"op": "ping"} -> {"ok": true}
The first line the agent writes is {"ready": true, ...}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.guest_safety import require_guest  # noqa: E402

PORT_NAME = "org.kexecd.agent"


def _port() -> str:
    for name in Path("/sys/class/virtio-ports").glob("*/name"):
        if name.read_text().strip() == PORT_NAME:
            return f"/dev/{name.parent.name}"
    raise SystemExit(f"no virtio port named {PORT_NAME}")


def _env(extra: dict[str, str]) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "TMPDIR": "/run/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if (REPO / "kexecd").is_dir():
        # The checkout the agent runs from is the kexecd under test, for the
        # venv's console scripts too: an editable install may point at
        # another checkout of the same venv (a git worktree's). The Debian
        # host's agent directory holds no kexecd: its .deb's stays in use.
        env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _run(req: dict[str, Any]) -> dict[str, Any]:
    start = time.monotonic()
    try:
        p = subprocess.run(
            req["argv"],
            input=req.get("input"),
            capture_output=True,
            text=True,
            errors="surrogateescape",
            timeout=req.get("timeout", 60),
            env=_env(req.get("env", {})),
            cwd=req.get("cwd", str(REPO)),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        err = e.stderr or b""
        return {
            "rc": None,
            "timeout": True,
            "stdout": out.decode(errors="replace") if isinstance(out, bytes) else out,
            "stderr": err.decode(errors="replace") if isinstance(err, bytes) else err,
            "seconds": time.monotonic() - start,
        }
    except OSError as e:
        return {"rc": 127, "timeout": False, "stdout": "", "stderr": str(e), "seconds": 0.0}
    return {
        "rc": p.returncode,
        "timeout": False,
        "stdout": p.stdout,
        "stderr": p.stderr,
        "seconds": time.monotonic() - start,
    }


def main() -> int:
    require_guest("start the test-bed agent")
    os.makedirs("/run/tmp", exist_ok=True)
    fd = os.open(_port(), os.O_RDWR)
    rfile = os.fdopen(os.dup(fd), "rb", buffering=0)

    def send(obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            n = os.write(fd, data)
            data = data[n:]

    send({"ready": True, "pid": os.getpid(), "python": sys.executable})
    buf = b""
    while True:
        chunk = rfile.read(65536)
        if not chunk:
            time.sleep(0.1)  # the host is not connected; wait for it
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            op = req.get("op")
            if op == "run":
                reply = _run(req)
            elif op == "panic":
                require_guest("crash the kernel")
                send({"id": req.get("id"), "ok": True})
                time.sleep(0.2)
                with open("/proc/sysrq-trigger", "w") as f:
                    f.write("c")
                continue
            else:
                reply = {"ok": True}
            reply["id"] = req.get("id")
            send(reply)


if __name__ == "__main__":
    sys.exit(main())
