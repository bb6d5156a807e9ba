"""Every kv_app setting: the one place its default and its help line live.

Each setting has three spellings: the config key (``DATA_PATH``), the environment
variable (``KV_DATA_PATH``) and the command-line flag (``--data-path``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "KV_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.lower().replace("_", "-")

    def parse(self, raw: str) -> Any:
        """Turn an environment string into a value of the default's type."""
        kind = type(self.default)
        if kind is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ConfigError(f"{self.env}={raw!r}: expected true or false")
        if kind is int:
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{self.env}={raw!r}: expected a whole number") from None
        if self.choices and raw not in self.choices:
            raise ConfigError(f"{self.env}={raw!r}: expected one of {', '.join(self.choices)}")
        return raw


SETTINGS: tuple[Setting, ...] = (
    # Read by the Flask app (create_app).
    Setting("DATA_PATH", None, "Path of the data file to serve (required)."),
    Setting(
        "ON_ERROR",
        "strict",
        "Bad data lines: strict refuses to start; lenient skips them and logs where.",
        ("strict", "lenient"),
    ),
    Setting(
        "STORE",
        "dict",
        "Store: dict (one Python dict) or compact (numpy arrays, memory flat under traffic).",
        ("dict", "compact"),
    ),
    Setting("MAX_BATCH", 1000, "Most ids one POST /items/batch may ask for."),
    # Read by gunicorn.conf.py.
    Setting("HOST", "127.0.0.1", "Address to listen on (the Docker image sets 0.0.0.0)."),
    Setting("PORT", 8123, "TCP port to listen on."),
    Setting("WORKERS", 2, "Worker processes (about one per core)."),
    Setting(
        "WORKER_CLASS",
        "gevent",
        "gunicorn worker class: gevent (lowest p50 and p99), gthread (more requests/s "
        "when saturated; put nginx in front), sync.",
        ("gevent", "gthread", "sync"),
    ),
    Setting("CONNECTIONS", 1000, "Simultaneous connections per worker (gevent)."),
    Setting("THREADS", 8, "Threads per worker (gthread)."),
    Setting("TIMEOUT", 30, "Seconds a worker may be silent before it is restarted."),
    Setting("ACCESS_LOG", False, "Log every request to stdout (costs throughput)."),
    Setting(
        "LOG_LEVEL",
        "info",
        "Log level of the server log on stderr.",
        ("debug", "info", "warning", "error", "critical"),
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as KV_* variables, parsed to their types."""
    environ = os.environ if environ is None else environ
    return {s.name: s.parse(environ[s.env]) for s in SETTINGS if s.env in environ}


def resolve(environ: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Defaults, then KV_* variables, then explicit overrides."""
    values = dict(DEFAULTS)
    values.update(from_environ(environ))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values
