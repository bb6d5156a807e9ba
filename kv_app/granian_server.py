"""kv_app on granian, the opt-in faster server: `kv-app serve --server granian DATA`.

granian is a Rust HTTP server (hyper) with a WSGI interface: it parses requests and writes
answers in Rust, so a lookup costs less CPU than under gunicorn + gevent. It runs the
same app (create_app, lean path included) with the same KV_* settings where granian has
an equivalent, and names on stderr at start-up what it does not offer (UNSUPPORTED).

How it serves, next to kv_app/gunicorn_conf.py:
- The data loads once, in this (the main) process, before any worker exists: a bad file
  stops start-up with one line and exit status 1. granian forks its workers (the
  `fork` start method), so they start with the app and its store already in memory, as
  gunicorn's preload_app does; each opens its store after the fork (a snapshot's LMDB
  environment must not cross a fork), as gunicorn's post_fork hook does.
- SIGHUP loads the data again in the main process; only if that succeeds does granian
  replace the workers one by one (each new one forked from the reloaded process) while
  the old ones finish what they serve. A failed load is logged and changes nothing.
- Every worker accepts from one listening socket made before the fork, as under
  gunicorn. (granian 2.8 on Linux gives each worker its own listening socket and warns
  that connections queued on a replaced worker's may be reset unless
  net.ipv4.tcp_migrate_req is 1.) A worker being replaced answers with Connection:
  close (Retiring), so no idle keep-alive connection breaks when it stops.
- Metrics: prometheus_client's multiprocess mode, as under gunicorn; a replaced worker's
  live gauges are dropped.
- Access log (KV_ACCESS_LOG=1): the same JSON object per request on stdout.
"""

from __future__ import annotations

import importlib.util
import logging
import logging.config
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from kv_app import reloading

# Settings granian has no equivalent for, and what it does instead: said at start-up.
UNSUPPORTED = {
    "TIMEOUT": "no worker heartbeat: a worker stuck in a request is not restarted",
    "WORKER_CLASS": "granian's workers run THREADS Python threads each (gevent/sync do not apply)",
}
# Behaviour of kv_app's gunicorn settings that granian does not offer.
NOT_OFFERED = (
    "request line/header limits (1024-byte line, 50 headers) and JSON answers to "
    "unparseable requests (granian answers those itself)",
    "a deadline for request bodies and closing connections whose body the app will not "
    "read (gunicorn hooks with no granian equivalent)",
    "backoff of crashing workers (granian respawns at once and exits after two crashes "
    "of a worker within 5.5 s)",
)
INSTALL_HINT = "granian is not installed: pip install 'kv-app[granian]'"
# Seconds between starting a new worker and stopping the old one it replaces, in a
# reload. The app is already loaded when a worker forks: it serves within milliseconds.
RESPAWN_INTERVAL = 1.0
# Seconds in-flight requests get after SIGTERM before workers are killed (gunicorn's
# graceful_timeout: less than the 10 s `docker stop` waits).
GRACEFUL_TIMEOUT = 8
BACKLOG = 2048
# gunicorn's log line format, so the server log looks the same under either server.
LOG_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
LOG_DATEFMT = "[%Y-%m-%d %H:%M:%S %z]"

log = logging.getLogger("kv_app")
access_log = logging.getLogger("kv_app.access")


def installed() -> bool:
    """Can granian be imported here?"""
    return importlib.util.find_spec("granian") is not None


def command() -> list[str]:
    """The command line that runs kv_app on granian (what `kv-app serve` execs)."""
    return [sys.executable, "-m", "kv_app.granian_server"]


def _logging_config(level: str, access: bool) -> dict:
    """granian's logging config with stderr for the server log (as gunicorn's errorlog),
    kv_app's logger beside it, and the JSON access lines alone on stdout. granian applies
    it in the main process and again in each worker."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "generic": {"()": "logging.Formatter", "fmt": LOG_FORMAT, "datefmt": LOG_DATEFMT},
            "access": {"()": "logging.Formatter", "fmt": "%(message)s"},
        },
        "handlers": {
            "console": {
                "formatter": "generic",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "kv_app": {"handlers": ["console"], "level": level.upper(), "propagate": False},
            "kv_app.access": {
                "handlers": ["access"],
                "level": "INFO" if access else "CRITICAL",
                "propagate": False,
            },
        },
    }


class Retiring:
    """WSGI layer that closes each connection after its answer once this worker's data is
    no longer the current one (a reload is replacing it).

    granian stops a worker gracefully, but an idle keep-alive connection is closed at
    once: a client sending its next request on it at that moment sees the connection
    break. Answering with `Connection: close` from the reload on, a worker being replaced
    holds no idle connection by the time it is stopped: its clients reconnect, to the
    new workers. `generation` is shared memory the main process counts reloads in.
    """

    def __init__(self, app, generation):
        self.app = app
        self.generation = generation
        self.born = generation.value  # in the worker, just after the fork

    def __call__(self, environ, start_response):
        if self.generation.value == self.born:
            return self.app(environ, start_response)

        def closing(status, headers, exc_info=None):
            return start_response(status, [*headers, ("Connection", "close")], exc_info)

        return self.app(environ, closing)


class JsonAccessLog:
    """WSGI layer writing one JSON object per request, in the shape of gunicorn_conf's
    access log: time, method, path, query, status, bytes, duration_us, remote,
    user_agent, request_id. The body is gathered into a list (answers are small), which
    granian sends in one write."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        answered: list = []

        def start(status, headers, exc_info=None):
            answered[:] = [status, headers]
            return start_response(status, headers, exc_info)

        body = self.app(environ, start)
        try:
            chunks = body if isinstance(body, list) else list(body)
        finally:
            if not isinstance(body, list) and hasattr(body, "close"):
                body.close()
        status, headers = answered or ("500", [])
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status.split(None, 1)[0]),
            "bytes": sum(len(c) for c in chunks),
            "duration_us": int((time.perf_counter() - started) * 1_000_000),
            "remote": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "request_id": environ.get("kv.request_id") or dict(headers).get("X-Request-ID"),
        }
        access_log.info("%s", _orjson().dumps(line).decode())
        return chunks


def _orjson():
    import orjson

    return orjson


def main() -> None:
    """Load the data, then serve it on granian until SIGTERM/SIGINT/SIGQUIT."""
    # A SIGHUP while the data loads would otherwise kill the process (its default
    # action): remembered, and honoured once the workers are up.
    early_hup: list[float] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: early_hup.append(time.time()))
    try:
        from granian.constants import HTTPModes, Interfaces
        from granian.net import SocketSpec
        from granian.server import MPServer
    except ImportError:
        print(f"kv-app: {INSTALL_HINT}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    made_metrics_dir = reloading.metrics_dir(os.environ.get("KV_METRICS_DIR"))
    try:
        from kv_app import api, config, metrics, processes
        from kv_app import app as kv_app_module

        try:
            settings = config.resolve()
        except config.ConfigError as e:
            print(f"kv-app: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        # A port in use: one line and exit 1 now, not after loading the data.
        refused = processes.cannot_listen(settings["HOST"], settings["PORT"])
        if refused:
            print(f"kv-app: {refused}", file=sys.stderr, flush=True)
            raise SystemExit(1)
        host, port = settings["HOST"], settings["PORT"]
        log_config = _logging_config(settings["LOG_LEVEL"], settings["ACCESS_LOG"])
        logging.config.dictConfig(log_config)
        for warning in config.unknown_environ():
            log.warning("%s", warning)
        for name, why in UNSUPPORTED.items():
            given = (
                f" ({config.BY_NAME[name].env} is set)"
                if config.BY_NAME[name].env in os.environ
                else ""
            )
            log.warning("granian: %s not offered%s: %s", name, given, why)
        for what in NOT_OFFERED:
            log.warning("granian: not offered: %s", what)

        flask_app = kv_app_module.app_from_environ()  # one line and exit 1 if unservable
        wsgi = JsonAccessLog(flask_app) if settings["ACCESS_LOG"] else flask_app
        generation = multiprocessing.RawValue("l", 0)  # reloads done; shared with workers

        def worker_app():
            """Runs in each worker, just after the fork: what gunicorn_conf's post_fork does."""
            processes.set_title(processes.worker_title(host, port))
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("1000")  # the OOM killer takes a worker, not the main process
            except OSError:
                pass
            store = flask_app.extensions[api.STORE]
            try:
                getattr(store, "open", lambda: None)()
            except Exception as e:  # it answers 503 (a changed snapshot), said once
                log.error("worker %s could not open its store: %s", os.getpid(), e)
            metrics.set_data(store)
            return Retiring(wsgi, generation)

        class KVGranian(MPServer):
            """granian's process manager with kv_app's reload and socket sharing."""

            def _init_shared_socket(self):
                # One listening socket, made here and inherited by every worker (granian's
                # path off Linux): connections queued on it survive a worker's stop.
                self._ssp = None
                self._shd = SocketSpec(self.bind_addr, self.bind_port, self.backlog).build()
                self._sfd = self._shd.get_fd()
                self._sso = socket.socket(fileno=self._sfd)
                self._sso.set_inheritable(True)

            def startup(self, spawn_target, target_loader):
                super().startup(spawn_target, target_loader)
                signal.signal(signal.SIGQUIT, self.signal_handler_interrupt)  # as gunicorn
                if early_hup:
                    log.info("SIGHUP arrived while the data was loading: reloading now")
                    early_hup.clear()
                    self.signal_handler_reload()

            def _respawn_workers(self, workers, spawn_target, target_loader, delay=0):
                old = [self.wrks[idx].inner.pid for idx in workers]
                try:
                    return super()._respawn_workers(workers, spawn_target, target_loader, delay)
                finally:
                    for pid in old:  # their live gauges stop counting
                        metrics.multiprocess.mark_process_dead(pid)

            def _reload(self, spawn_target, target_loader):
                log.info("SIGHUP: loading the data again")
                if _load_again():
                    generation.value += 1  # the old workers close connections from now on
                    return super()._reload(spawn_target, target_loader)
                self.reload_signal = False
                self.main_loop_interrupt.clear()
                if self.interrupt_signal or self.interrupt_children:
                    self.main_loop_interrupt.set()  # a stop that came meanwhile
                return None

        server = None

        def _load_again() -> bool:
            """SIGHUP: load the data again; True once the app serves it (new workers
            will), False if anything failed (the same workers go on with the old data)."""
            store = reloading.load_again(
                flask_app.extensions[api.STORE],
                log,
                lambda signum: server.signal_handler_interrupt(),
            )
            if store is None:
                return False
            reloading.swap(flask_app, store, log)
            return True

        server = KVGranian(
            "kv_app",  # a name only: the app is the one loaded above (target_loader)
            address=settings["HOST"],
            port=settings["PORT"],
            interface=Interfaces.WSGI,
            http=HTTPModes.http1,  # as gunicorn: HTTP/1.1 only
            workers=settings["WORKERS"],
            blocking_threads=settings["THREADS"],
            backpressure=settings["CONNECTIONS"],
            backlog=BACKLOG,
            log_level=settings["LOG_LEVEL"],
            log_dictconfig=log_config,
            respawn_failed_workers=True,
            respawn_interval=RESPAWN_INTERVAL,
            workers_kill_timeout=GRACEFUL_TIMEOUT,
            pid_file=Path(settings["PID_FILE"]) if settings["PID_FILE"] else None,
            # The same titles as under gunicorn: `kv-app reload` and `sync --port` find it.
            process_name=processes.master_title(host, port, settings["DATA_PATH"]),
        )
        server.serve(target_loader=worker_app, wrap_loader=False)
    finally:
        if made_metrics_dir:
            shutil.rmtree(made_metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
