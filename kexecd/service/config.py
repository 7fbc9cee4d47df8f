# SPDX-License-Identifier: GPL-2.0-or-later
"""``/etc/kexecd.conf``: the daemon's settings (TOML, every key optional).

::

    # /etc/kexecd.conf
    state_dir = "/var/lib/kexecd"    # the snapshot kexecd load keeps
    runtime_dir = "/run/kexecd"      # state.json and kexecd.sock
    root = "/"                       # read /proc and /sys under this directory
    source = "udev"                  # uevents from udevd, or "kernel" without it
    settle_ms = 100                  # quiet = this + the last reload's time (or the burst's
                                     # longest pause): the first event after quiet: refresh
                                     # at once; later ones: once they pause for quiet ...
    max_delay_ms = 3000              # ... never later than this after the first of them
    adopt = true                     # take over the crash kernel the distro loads
    kexec_cmd = ""                   # its record; "" = kdump-tools' (if installed)
    crash_acpi_no_memhotplug = true  # append it to a crash command line that lacks it,
                                     # on a host that can hot-add memory
    keep_kernel_memsz = false        # true: reload the crash kernel's segment with the
                                     # zero-filled tail kexec-tools gave it (x86: init_size)
    metrics_dir = "/var/lib/prometheus/node-exporter"  # kexecd.prom for node exporter's
                                     # textfile collector; "" = off (off too when missing)

The daemon reads it, and ``kexecd adopt``, ``refresh`` and ``status`` too
(``--config``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexecd.errors import ConfigError
from kexecd.files import read_own_optional
from kexecd.paths import (
    DEFAULT_CONFIG,
    DEFAULT_METRICS_DIR,
    DEFAULT_RUNTIME_DIR,
    DEFAULT_STATE_DIR,
)

__all__ = ["Config", "load_config"]

if TYPE_CHECKING:
    from kexecd.image.plan import Policy


@dataclass(frozen=True)
class Config:
    """The daemon's settings, with their defaults."""

    state_dir: Path = DEFAULT_STATE_DIR
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    root: Path = Path("/")
    source: str = "udev"
    settle_ms: int = 100
    max_delay_ms: int = 3000
    adopt: bool = True
    kexec_cmd: str = ""
    crash_acpi_no_memhotplug: bool = True
    keep_kernel_memsz: bool = False
    metrics_dir: str = str(DEFAULT_METRICS_DIR)

    @property
    def policy(self) -> Policy:
        """The settings a refresh follows (:class:`kexecd.image.plan.Policy`)."""
        from kexecd.image.plan import Policy  # imported when used: start-up time

        return Policy(
            acpi_no_memhotplug=self.crash_acpi_no_memhotplug,
            trim_kernel=not self.keep_kernel_memsz,
        )


_TYPES: dict[str, type] = {
    "state_dir": str,
    "runtime_dir": str,
    "root": str,
    "source": str,
    "settle_ms": int,
    "max_delay_ms": int,
    "adopt": bool,
    "kexec_cmd": str,
    "crash_acpi_no_memhotplug": bool,
    "keep_kernel_memsz": bool,
    "metrics_dir": str,
}


MAX_CONFIG = 1 << 20


def load_config(path: Path | None, **overrides: Any) -> Config:
    """Read ``path`` (a missing default file is fine), then apply ``overrides``.

    :raises ConfigError: unreadable TOML, an unknown key, or a bad value;
        the message names the file and the key.
    """
    values: dict[str, Any] = {}
    if path is not None:
        got = read_own_optional(
            path, MAX_CONFIG, ConfigError, "give kexecd's settings in a TOML file", follow=True
        )
        if got is None:
            # The default file is optional; a file named on purpose is not.
            if path != DEFAULT_CONFIG:
                raise ConfigError(f"{path}: missing")
        else:
            import tomllib  # only with a file to read: a start-up cost otherwise

            try:
                values = tomllib.loads(got[0].decode())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(f"{path}: not TOML: {e}") from None
    known = {f.name for f in fields(Config)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(sorted(known))}")
        if not isinstance(value, _TYPES[key]) or (
            isinstance(value, bool) and _TYPES[key] is not bool
        ):
            raise ConfigError(f"{path}: {key} must be a {_TYPES[key].__name__}, not {value!r}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    paths = {"state_dir", "runtime_dir", "root"}
    converted: dict[str, Any] = {k: Path(v) if k in paths else v for k, v in values.items()}
    cfg = Config(**converted)
    if cfg.source not in ("udev", "kernel"):
        raise ConfigError(
            f"{path or 'config'}: source must be 'udev' or 'kernel', not {cfg.source!r}"
        )
    if cfg.metrics_dir and not cfg.metrics_dir.startswith("/"):
        raise ConfigError(
            f'{path or "config"}: metrics_dir must be an absolute path, or "" for no '
            f"metrics, not {cfg.metrics_dir!r}"
        )
    if not 0 < cfg.settle_ms <= cfg.max_delay_ms:
        raise ConfigError(
            f"{path or 'config'}: need 0 < settle_ms <= max_delay_ms "
            f"(got {cfg.settle_ms} and {cfg.max_delay_ms})"
        )
    return cfg
