"""gunicorn settings and hooks for kv_app: `gunicorn -c python:kv_app.gunicorn_conf`.

This is what `kv-app serve` and the Docker image run; the top-level gunicorn.conf.py of a
checkout only imports it. Every value a user may change comes from a KV_* environment
variable (defaults, types and ranges in kv_app/config.py); the rest is fixed here, each
with why. gunicorn reads every module-level name that is one of its settings, so helpers
have private names.
"""

import collections
import logging
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime

import gevent
import orjson as _orjson
from gunicorn import util as _gunicorn_util
from gunicorn.glogging import Logger as _GunicornLogger

from kv_app import config as _config
from kv_app import processes as _processes
from kv_app import reloading as _reloading

# Importing this module only reads the settings: the process is set up by the logger's
# setup (_JsonAccessLogger, below), gunicorn's first call into these settings, made in
# the master before the app is loaded. kv_app's app, api and metrics modules are imported
# after that (prometheus_client must see PROMETHEUS_MULTIPROC_DIR when first imported).
try:
    _kv = _config.resolve()
except _config.ConfigError as _e:
    # One line, no traceback (gunicorn would print one for any other exception here).
    print(f"kv-app: {_e}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None

# --- The app --------------------------------------------------------------------------
# The factory builds the one app object from KV_* variables; a setting or data file that
# cannot be served stops start-up with one line and exit status 1.
wsgi_app = "kv_app.app:app_from_environ()"
# Load the data once, in the master, before forking: every worker starts with the store
# already in memory (shared copy-on-write pages) and a bad file stops start-up before
# any worker exists. A new data file is picked up on SIGHUP (on_reload, below); a code
# change needs a restart.
preload_app = True

# --- Socket ---------------------------------------------------------------------------
# KV_HOST, KV_PORT: 127.0.0.1:8123 by default; the Docker image listens on 0.0.0.0.
bind = [f"{_kv['HOST']}:{_kv['PORT']}"]
# Connections waiting to be accepted (64-2048); beyond it clients see connection errors.
backlog = 2048

# --- Workers --------------------------------------------------------------------------
# KV_WORKERS: processes; one per core (2-4 here). Each holds its own copies of the pages
# of the store that lookups touch: see README "How much data can it handle".
workers = _kv["WORKERS"]
# KV_WORKER_CLASS, chosen by measurement (scripts/bench_workers.sh, README "Choosing the
# worker class"); default gevent:
# - gevent: each connection is a greenlet, so a slow, idle or keep-alive client costs a few
#   KB, not a process or a thread. Lowest latency (p50 about 0.25 ms at 1 connection; the
#   only class under 0.3 ms) and, with the post_request hook below, the lowest p99 when
#   the CPU is saturated.
# - gthread: a thread pool; idle keep-alive connections wait in a poller. p50 0.41 ms at 1
#   connection, p99 about 30-36 ms when saturated, and each slow client holds a thread:
#   put nginx in front (deploy/nginx.conf).
# - sync: one request at a time per worker, no keep-alive (a new TCP connection per
#   request); a slow client blocks a whole worker: only behind nginx.
# Requests never block on I/O inside the app, so gevent's monkey-patching changes nothing.
worker_class = _kv["WORKER_CLASS"]
# KV_CONNECTIONS (gevent): simultaneous connections per worker; more wait in the backlog.
worker_connections = _kv["CONNECTIONS"]
# KV_THREADS (gthread): threads per worker: the connections served at once. Only for
# gthread: gunicorn would turn sync workers with threads > 1 into gthread.
threads = _kv["THREADS"] if worker_class == "gthread" else 1
# KV_TIMEOUT, seconds: a worker silent for longer is killed and replaced.
timeout = _kv["TIMEOUT"]
# Worker heartbeat files in memory: on a slow or read-only disk they can stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Seconds in-flight requests get to finish after SIGTERM before workers are killed. Less
# than the 10 s `docker stop` waits before SIGKILL, so a stop in Docker stays graceful.
graceful_timeout = 8
# Seconds (1-75) an idle keep-alive connection is kept open; clients reuse connections.
keepalive = 5

# --- Request limits (anything larger is refused by gunicorn before Flask sees it) -----
# Bytes of the request line: "GET /items/<36-char id> HTTP/1.1" is 56; 4094 is the max.
limit_request_line = 1024
# Number of headers (1-32768) and bytes of one header (1-8190).
limit_request_fields = 50
limit_request_field_size = 8190

# --- Logging --------------------------------------------------------------------------
# Server log on stderr, level from KV_LOG_LEVEL; kv_app's own logger uses the same format
# and level (_log_like_gunicorn, below), so the log has one timestamp format.
errorlog = "-"
loglevel = _kv["LOG_LEVEL"]
# KV_ACCESS_LOG=1: one JSON object per request on stdout (_JsonAccessLogger, below).
# Off by default: it costs throughput (README "What metrics and logs cost").
accesslog = "-" if _kv["ACCESS_LOG"] else None
# Name the processes in ps/top.
proc_name = "kv-app"
# KV_PID_FILE: the master's PID, for `kill -HUP "$(cat FILE)"`.
pidfile = _kv["PID_FILE"]

# --- Control ----------------------------------------------------------------------------
# No control socket: its default path ($HOME/.gunicorn/gunicorn.ctl) is one per user, so
# two servers on one host (tests, blue/green swaps) would fight over it, and the image's
# user has no home. Manage the server with signals (TERM, HUP, USR2), as the README says.
control_socket_disable = True


class _JsonAccessLogger(_GunicornLogger):
    """gunicorn's logger, with access lines as JSON objects: time, method, path, query,
    status, bytes, duration_us, remote, user_agent, request_id (the X-Request-ID the app
    answered with: the client's, or one it made). Its setup is where the master's
    process is set up (_set_up_master)."""

    def setup(self, cfg):
        """gunicorn calls this first in the master, before the app loads (and again on
        every reload)."""
        _set_up_master()
        super().setup(cfg)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": getattr(req, "method", None),
            "path": getattr(req, "path", None),
            "query": getattr(req, "query", None) or None,
            "status": _status_code(resp),
            "bytes": resp.sent,
            "duration_us": request_time.seconds * 1_000_000 + request_time.microseconds,
            "remote": environ.get("REMOTE_ADDR"),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            # set by the app; the answer's header only when the app did not run
            "request_id": environ.get("kv.request_id")
            or dict(resp.headers or ()).get("X-Request-ID"),
        }
        try:
            self.access_log.info("%s", _orjson.dumps(line).decode())
        except Exception:
            self.exception("access log")


logger_class = _JsonAccessLogger


def _status_code(resp) -> int | None:
    """The answer's status: a served answer has status_code; the answer gunicorn makes
    for a request it could not parse (a 400) only its status line (without this, that
    400 became a 500 and two tracebacks once the access log was on)."""
    code = getattr(resp, "status_code", None)
    if code is None:
        status = str(getattr(resp, "status", "") or "").split(None, 1)
        code = int(status[0]) if status and status[0].isdigit() else None
    return code


def _log_like_gunicorn(level: str) -> None:
    """kv_app's logger writes to stderr in gunicorn's format, at KV_LOG_LEVEL."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_GunicornLogger.error_fmt, _GunicornLogger.datefmt))
    log = logging.getLogger("kv_app")
    log.handlers[:] = [handler]
    log.setLevel(level.upper())


# What the master's set-up made: SIGHUPs that arrived while the data was loading, and the
# metrics directory it created (removed on exit), if any.
_EARLY_HUP: list[float] = []
_is_set_up = False
_made_metrics_dir: str | None = None


def _set_up_master() -> None:
    """Once per process, before the app is loaded:

    - A SIGHUP while the data loads, before gunicorn installs its handlers, would kill
      the server with an empty log (the default action). Until then it is remembered,
      and honoured once the server is up (when_ready).
    - Metrics across workers: KV_METRICS_DIR or a fresh directory for each start,
      removed on exit (_reloading.metrics_dir).
    - kv_app's own log lines in gunicorn's format and level.
    - A port already in use stops start-up now, with one line and exit status 1, before
      the data loads (gunicorn would load it all, then retry the bind for 5 s).
    - Process titles say which process is the master, its address and its data (`kv-app
      master 127.0.0.1:8123 /srv/kv/current`), and `kv-app worker 127.0.0.1:8123`:
      gunicorn's own ("gunicorn: master [kv-app]") said neither, nor which server.
    """
    global _is_set_up, _made_metrics_dir
    if _is_set_up:
        return
    _is_set_up = True
    refused = _processes.cannot_listen(_kv["HOST"], _kv["PORT"])
    if refused:
        print(f"kv-app: {refused}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    _gunicorn_util._setproctitle = _set_title  # gunicorn's titles -> kv_app's
    _set_title("master")
    signal.signal(signal.SIGHUP, lambda signum, frame: _EARLY_HUP.append(time.time()))
    _made_metrics_dir = _reloading.metrics_dir(_kv["METRICS_DIR"])
    _log_like_gunicorn(_kv["LOG_LEVEL"])


def _set_title(gunicorn_title: str) -> None:
    """gunicorn's util._setproctitle, which it calls as "master [NAME]" (in the master,
    again on each reload) and "worker [NAME]" (in each new worker)."""
    if gunicorn_title.startswith("worker"):
        _processes.set_title(_processes.worker_title(_kv["HOST"], _kv["PORT"]))
    else:
        data = os.environ.get("KV_DATA_PATH") or _kv["DATA_PATH"]
        _processes.set_title(_processes.master_title(_kv["HOST"], _kv["PORT"], data))


def _ignore_hup_in(worker) -> None:
    """A SIGHUP sent to a worker (by mistake: a reload is the master's) is logged and
    ignored: its default action killed the worker, and nothing was reloaded."""

    def hup(signum, frame):
        worker.log.warning(
            "worker %s got SIGHUP and ignored it: to reload, send SIGHUP to the master, "
            "pid %s (kv-app reload --port %s)",
            worker.pid,
            worker.ppid,
            _kv["PORT"],
        )

    signal.signal(signal.SIGHUP, hup)


# --- Hooks ------------------------------------------------------------------------------


def on_starting(server):
    """Warn about KV_* variables that are no setting: a typo would otherwise go unseen."""
    for warning in _config.unknown_environ():
        server.log.warning("%s", warning)


_STOP_SIGNALS = _reloading.STOP_SIGNALS


def when_ready(server):
    """The server is up: stop signals go before reloads, a reload first loads the data
    (and goes no further if that fails), and a SIGHUP that arrived while the data was
    loading is honoured now. (Where the docs are is said when the app is made.)"""
    original_wait = server.wait_for_signals
    server.wait_for_signals = lambda timeout=1.0: _coalesce(original_wait(timeout))
    original_kill = server.kill_worker

    def kill_worker(pid, sig):
        _RETIRED.add(pid)  # its exit is expected: not counted as a crash
        try:
            return original_kill(pid, sig)
        finally:
            if pid not in server.WORKERS:  # gone already (ESRCH): no child_exit follows
                _RETIRED.discard(pid)

    server.kill_worker = kill_worker
    gunicorn_reload = server.reload
    server.reload = lambda: _reload(server, gunicorn_reload)
    if _EARLY_HUP:
        server.log.info("SIGHUP arrived while the data was loading: reloading now")
        _EARLY_HUP.clear()
        server.signal(signal.SIGHUP, None)


def _coalesce(signals: list[int]) -> list[int]:
    """The signals the master handles, of those queued since it last looked: a stop
    signal alone (gunicorn 27 would first run every queued reload: 20 SIGHUPs then a
    SIGTERM took 67 s to stop), and one SIGHUP for a burst of them."""
    stops = [sig for sig in signals if sig in _STOP_SIGNALS]
    if stops:
        return stops[:1]
    handled: list[int] = []
    for sig in signals:
        if sig != signal.SIGHUP or sig not in handled:
            handled.append(sig)
    return handled


# Workers that died without being asked to (a crash, SIGBUS, the OOM killer): the times
# of the recent ones, in the master; a new worker waits longer the more there are.
_CRASHES: collections.deque[float] = collections.deque(maxlen=32)
_RETIRED: set[int] = set()  # workers the master itself signalled (reload, stop, timeout)
_CRASH_WINDOW = 60.0


def _backoff() -> tuple[float, int]:
    """(seconds a new worker waits before serving, crashes in the last minute): no wait
    after one crash, then 0.5, 1, 2 ... up to 10 s (and at most half the worker timeout)."""
    now = time.monotonic()
    crashes = sum(1 for t in _CRASHES if now - t < _CRASH_WINDOW)
    if crashes < 2:
        return 0.0, crashes
    return min(0.5 * 2 ** (crashes - 2), 10.0, _kv["TIMEOUT"] / 2), crashes


def post_fork(server, worker):
    """A new worker: it honours SIGTERM at once, is the OOM killer's first choice, waits
    after repeated crashes, opens its store and publishes the data gauges.

    - Until the worker installs its own handlers (after gevent's monkey-patching, a few
      hundred ms, or a crash backoff) it runs the master's, which would swallow SIGTERM,
      SIGINT and SIGQUIT: the worker would then live until graceful_timeout ran out and
      be killed. Marking it not alive makes it stop as soon as its loop starts.
    - Requests gunicorn refuses before the app sees them (a bad request line, framing
      or headers) are answered in the app's JSON error shape, not gunicorn's HTML page.
    - An answer's headers leave with its body, in one send (kv_app/responses.py).
    - A SIGHUP sent to the worker by mistake is logged and ignored (_ignore_hup_in).
    - oom_score_adj 1000: under a memory limit the kernel kills a worker (the master
      replaces it) rather than the master (which would take every worker with it).
    - A worker that keeps dying (a snapshot truncated under it: SIGBUS) is replaced
      after a growing wait, not in a tight loop.
    - The store opens now, not on the first lookup: a snapshot's data file is checked
      against what the master opened; if it changed, this worker answers 503 (and says
      why, once), never the changed bytes.
    """
    from kv_app import api, metrics, responses
    from kv_app.stores import StoreUnavailable

    for stop in _STOP_SIGNALS:  # TERM, and INT and QUIT (the master's quick stop)
        signal.signal(stop, lambda signum, frame: setattr(worker, "alive", False))
    # A SIGHUP is ignored, saying so, from now on (until now the master's handler would
    # swallow it silently); gunicorn's init_signals (in the worker, after this hook)
    # would reset it to its default action, terminate: it is left out of those it resets.
    _ignore_hup_in(worker)
    worker.SIGNALS = [sig for sig in worker.SIGNALS if sig != signal.SIGHUP]
    _gunicorn_util.write_error = _write_json_error
    responses.install()  # headers and body in one send
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    wait, crashes = _backoff()
    if wait:
        server.log.warning(
            "worker %s waits %.1f s before serving: %d workers died in the last %d s",
            worker.pid,
            wait,
            crashes,
            _CRASH_WINDOW,
        )
        deadline = time.monotonic() + wait
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.05)
    store = getattr(server.app.callable, "extensions", {}).get(api.STORE)
    if store is None:  # not kv_app's app (scripts/bench_baseline.py's run under these hooks)
        return
    try:
        getattr(store, "open", lambda: None)()
    except StoreUnavailable as e:
        server.log.error("worker %s not serving: %s", worker.pid, e)
    except Exception as e:  # never a boot error: gunicorn would stop every worker for it
        server.log.error("worker %s could not open its store: %s", worker.pid, e)
    metrics.set_data(store)


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it could not parse, in kv_app's one error shape."""
    body = _orjson.dumps({"status": status_int, "error": reason, "message": mesg or reason})
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    _gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


def child_exit(server, worker):
    """A worker is gone: its live gauges stop counting (its counters stay summed); an
    exit the master did not ask for counts towards the next workers' backoff."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    if worker.pid in _RETIRED:
        _RETIRED.discard(worker.pid)
    else:
        _CRASHES.append(time.monotonic())


def on_exit(server):
    """Remove the metrics directory this start made."""
    if _made_metrics_dir:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def pre_request(worker, req):
    """Close the connection after a request whose body the app will not read.

    gunicorn reads and discards an unread body before the next request on a keep-alive
    connection, without limit; with gevent that greenlet never yields while the client
    keeps sending, so two such clients stopped both default workers. Closing instead
    costs nothing to well-behaved clients (they send no body, or a batch the app reads).
    """
    from kv_app import api, bodies

    length, chunked = None, False
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            length = int(value) if value.isdigit() else None
        elif name == "TRANSFER-ENCODING":
            chunked = chunked or "chunked" in value.lower()
    if api.body_left_unread(req.method, req.path, length, chunked, _kv["MAX_BATCH"]):
        req.force_close()
    elif length or chunked:
        bodies.bound(req, BODY_TIMEOUT, _body_slots())


# Seconds a client gets to send a whole request body (a batch). gunicorn sets no limit on
# bodies: 2,100 clients sending a byte every 2 s held every connection of the default
# server. A batch of 1000 ids is 39 KB: seconds are plenty on any real link.
BODY_TIMEOUT = 10.0


# Bodies a worker waits for at once: half its connections (gevent) or threads (gthread).
# A body counts only while its reader waits for bytes that have not arrived: a client
# that sends its body at once never holds one. Past the limit, a request whose next body
# bytes are not there yet is answered 503 (Retry-After: 1) instead of waiting, so slow
# senders can never take the connections that lookups need. sync: one request at a time.
def _body_slots() -> int | None:
    if worker_class == "gevent":
        return max(1, worker_connections // 2)
    if worker_class == "gthread":
        return max(1, threads // 2)
    return None


def _reload(server, gunicorn_reload) -> None:
    """SIGHUP: load the data again, in the master, and only if that succeeds let gunicorn
    reload (re-read its settings, fork new workers that serve the new data, stop the old
    ones gracefully): no request fails and none is answered from a half-loaded store.

    Any failure (a bad file, a read error, no room under the memory limit, a bug) is
    logged and changes nothing: the same workers go on serving the data loaded before
    (forking a second set of workers under a memory limit that had no room for the new
    data got them OOM-killed mid-request). A stop signal (TERM, INT, QUIT) during the
    load abandons it and is then handled as usual: a shutdown never waits for a load.
    Publish a new file by renaming it over KV_DATA_PATH, then `kill -HUP <master>`.
    """
    from kv_app import api

    served = server.app.callable.extensions[api.STORE]
    # A stop signal during the load: gunicorn handles it once this returns.
    store = _reloading.load_again(served, server.log, lambda signum: server.signal(signum, None))
    changed = getattr(served, "changed", lambda: None)()
    del served  # the old store's last reference here: freed by on_reload, not later
    if store is None:
        if changed:  # the workers answer 503 for it (they check the file per lookup)
            server.log.error("the data served is no longer servable: %s", changed)
        server.log.reopen_files()  # what a SIGHUP also asks of gunicorn
        return
    server.kv_reloaded = store
    del store
    try:
        gunicorn_reload()  # calls on_reload, then forks the new workers
    finally:
        server.__dict__.pop("kv_reloaded", None)


def on_reload(server):
    """Swap in the store _reload loaded, before gunicorn forks the new workers."""
    store = server.__dict__.pop("kv_reloaded", None)
    if store is None:  # a reload that did not come through _reload: nothing was loaded
        return
    _reloading.swap(server.app.callable, store, server.log)


def post_request(worker, req, environ, resp):
    """The body deadline ends with its request; and with gevent, let this worker's other
    connections run before this one's next request.

    A greenlet only yields when a read would block. On a busy machine a client's next
    request is often already waiting when its response is sent, so without this that
    connection keeps the worker and the others wait: p99 went from 160-330 ms to 10-20 ms
    at 32-64 connections, for about 10 us a request (scripts/bench_workers.sh).
    """
    from kv_app import bodies

    bodies.unbound(req)
    if type(worker).__module__ == "gunicorn.workers.ggevent":  # whatever set the class
        gevent.idle()
