"""Every kv_app setting: the one place its type, range, default and help line live.

Each setting has three spellings: the config key (``MAX_BATCH``), the environment
variable (``KV_MAX_BATCH``) and the command-line flag (``--max-batch``); the data path
is the exception, the DATA_FILE argument of ``kv-app serve`` (or ``KV_DATA_PATH``).
Values are checked wherever they come from; a bad one is a ConfigError naming it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kv_app.stores import STORES

ENV_PREFIX = "KV_"
# KV_* variables read by something other than the server (`kv-app get`).
OTHER_ENV = frozenset({"KV_URL"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: type = str
    choices: tuple[str, ...] = ()
    low: int | None = None
    high: int | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.lower().replace("_", "-")

    def expected(self) -> str:
        """What a good value looks like, for error messages and help."""
        if self.kind is bool:
            return "true or false"
        if self.kind is int:
            return f"a whole number from {self.low} to {self.high}"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return "a string"

    def parse(self, raw: str, spelling: str | None = None) -> Any:
        """Turn a string (an environment variable) into a checked value."""
        spelling = spelling or self.env
        value: Any = raw
        if self.kind is bool:
            low = raw.strip().lower()
            if low not in _TRUE + _FALSE:
                raise ConfigError(f"{spelling}={raw!r}: expected {self.expected()}")
            value = low in _TRUE
        elif self.kind is int:
            try:
                value = int(raw.strip())
            except ValueError:
                raise ConfigError(f"{spelling}={raw!r}: expected {self.expected()}") from None
        return self.check(value, spelling)

    def check(self, value: Any, spelling: str | None = None) -> Any:
        """The value if it has this setting's type and range; else ConfigError."""
        spelling = spelling or self.name
        if value is None and self.default is None:
            return None
        if self.kind is not bool and isinstance(value, bool) or not isinstance(value, self.kind):
            if isinstance(value, str):
                return self.parse(value, spelling)
            raise ConfigError(f"{spelling}={value!r}: expected {self.expected()}")
        if self.kind is int and not self.low <= value <= self.high:
            raise ConfigError(f"{spelling}={value!r}: expected {self.expected()}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{spelling}={value!r}: expected {self.expected()}")
        return value


SETTINGS: tuple[Setting, ...] = (
    # Read by the Flask app (create_app).
    Setting("DATA_PATH", None, "Path of the data file to serve (required)."),
    Setting(
        "ON_ERROR",
        "strict",
        "Bad data lines: strict refuses to start; lenient skips them and logs where.",
        choices=("strict", "lenient"),
    ),
    Setting(
        "STORE",
        "dict",
        "Store: " + "; ".join(f"{k.name} ({k.help})" for k in STORES.values()) + ".",
        choices=tuple(STORES),
    ),
    Setting("MAX_BATCH", 1000, "Most ids one POST /items/batch may ask for.", int, (), 1, 100_000),
    # 4 MiB: far above what a key-value line usually holds, yet 24 slow clients of such a
    # value hold about 100 MB, not the gigabytes of 100 MB values; loading, building and
    # checking refuse a longer value without reading its line whole. Up to 1 GiB.
    Setting(
        "MAX_VALUE_BYTES",
        4 * 1024 * 1024,
        "Largest value (bytes of UTF-8) a data line may hold; a longer one is a bad line "
        "(checked by loading, kv-app check, build and publish).",
        int,
        (),
        1,
        1024 * 1024 * 1024,
    ),
    Setting(
        "CACHE_MAX_AGE",
        60,
        "Seconds a found item may be cached (Cache-Control max-age); the data is immutable "
        "per version, so this bounds how stale a cache can be after a switch.",
        int,
        (),
        0,
        31_536_000,
    ),
    Setting(
        "CACHE_MAX_AGE_MISSING",
        5,
        "Seconds a 404 may be cached (the next version may have the key); 0: not at all.",
        int,
        (),
        0,
        31_536_000,
    ),
    # Read by kv-app serve: which server runs the app.
    Setting(
        "SERVER",
        "gunicorn",
        "HTTP server: gunicorn (every setting below) or granian (opt-in: less CPU per "
        "request; needs pip install 'kv-app[granian]'; says at start-up which settings "
        "it cannot offer).",
        choices=("gunicorn", "granian"),
    ),
    # Read by kv_app/gunicorn_conf.py (and kv_app/granian_server.py, where granian has
    # an equivalent).
    Setting("HOST", "127.0.0.1", "Address to listen on (the Docker image sets 0.0.0.0)."),
    Setting("PORT", 8123, "TCP port to listen on.", int, (), 1, 65535),
    Setting("WORKERS", 2, "Worker processes (about one per core).", int, (), 1, 64),
    Setting(
        "WORKER_CLASS",
        "gevent",
        "gunicorn worker class: gevent (lowest p50 and p99), gthread (more requests/s "
        "when saturated; put nginx in front), sync.",
        choices=("gevent", "gthread", "sync"),
    ),
    Setting(
        "CONNECTIONS", 1000, "Simultaneous connections per worker (gevent).", int, (), 1, 100_000
    ),
    Setting("THREADS", 8, "Threads per worker (gthread).", int, (), 1, 256),
    Setting(
        "TIMEOUT", 30, "Seconds a worker may be silent before it is restarted.", int, (), 1, 3600
    ),
    Setting("ACCESS_LOG", False, "Log every request to stdout as JSON (costs throughput).", bool),
    Setting("METRICS", True, "Count requests and lookups and serve /metrics (Prometheus).", bool),
    Setting(
        "METRICS_DIR",
        None,
        "Directory of the workers' metrics files, emptied at start (default: a new "
        "temporary one per start); one per server.",
    ),
    Setting(
        "LOG_LEVEL",
        "info",
        "Level of the server log on stderr (gunicorn's and kv_app's own messages).",
        choices=("debug", "info", "warning", "error", "critical"),
    ),
    Setting("PID_FILE", None, "Write the master's PID to this file (for kill -HUP)."),
    # Read by kv-app build and publish.
    Setting(
        "TMP_DIR",
        None,
        "Directory for a build's temporary runs (about the size of the text, removed "
        "after the build); default: beside the snapshot.",
    ),
    Setting(
        "JOBS",
        0,
        "Processes a build uses: they check and partition pieces of the text, then sort "
        "partitions while one appends them to the snapshot; 0: one per usable core "
        "(at most 8). Peak memory grows by about 100 MB a job.",
        int,
        low=0,
        high=64,
    ),
    # Read by kv-app publish.
    Setting(
        "KEEP_VERSIONS",
        3,
        "Snapshot versions kv-app publish keeps under a root, the current one included.",
        int,
        (),
        1,
        1000,
    ),
    # Read by kv-app pull and sync (object storage).
    Setting(
        "MAX_BYTES_PER_SECOND",
        0,
        "Most bytes a second kv-app pull and sync download (a node's disk and network "
        "keep serving while a version arrives); 0: no limit.",
        int,
        (),
        0,
        10**12,
    ),
    Setting(
        "SYNC_INTERVAL",
        30,
        "Seconds kv-app sync waits between two looks at the bucket's current version.",
        int,
        (),
        1,
        86_400,
    ),
    Setting(
        "SYNC_METRICS_FILE",
        None,
        "File kv-app sync rewrites after each look (Prometheus text format: pulls, "
        "refusals, errors, versions), e.g. for node_exporter's textfile collector.",
    ),
    # Read by the Flask app (kv_app/web.py): browsers on other origins, compression.
    Setting(
        "CORS_ORIGINS",
        "",
        "Origins whose pages may call the API from a browser (CORS), comma-separated, "
        "each a scheme, host and port as the browser sends it (https://app.example,"
        "http://127.0.0.1:8080), or * for any; empty: none (CORS off). Preflights "
        "(POST /items/batch with JSON) are answered; errors carry the headers too.",
    ),
    Setting(
        "COMPRESS_MIN_BYTES",
        1024,
        "JSON and text answers of at least this many bytes are gzipped for clients that "
        "accept gzip (their ETag gets a :gzip suffix); 0: never compress.",
        int,
        (),
        0,
        1 << 30,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as KV_* variables, parsed to their types."""
    environ = os.environ if environ is None else environ
    return {s.name: s.parse(environ[s.env]) for s in SETTINGS if s.env in environ}


def resolve(environ: Mapping[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """Defaults, then KV_* variables, then explicit overrides, every value checked."""
    values = dict(DEFAULTS)
    values.update(from_environ(environ))
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in BY_NAME:
            raise ConfigError(f"{name}: not a kv_app setting{_suggest(name, BY_NAME)}")
        values[name] = BY_NAME[name].check(value)
    return values


def unknown_environ(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each KV_* variable that is no setting (a typo is otherwise silent)."""
    environ = os.environ if environ is None else environ
    known = {s.env for s in SETTINGS} | OTHER_ENV
    return [
        f"{name} is not a kv_app setting, ignored{_suggest(name, known)}"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known
    ]


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
