"""gunicorn settings for kv_app: `gunicorn -c gunicorn.conf.py` (what `kv-app serve` runs).

Every value a user may change comes from a KV_* environment variable; the defaults live
in kv_app/config.py. The rest are fixed here, each with why.
"""

import os
import signal
import sys

import gevent

from kv_app.app import create_app as _create_app

# (Imported under private names: a module-level `config` would be read as a setting.)
from kv_app.config import ConfigError as _ConfigError
from kv_app.config import resolve as _resolve
from kv_app.loader import LoadError as _LoadError

_kv = _resolve()

# --- The app --------------------------------------------------------------------------
# wsgi.py builds the one app object from KV_* variables.
wsgi_app = "wsgi:app"
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
# KV_CONNECTIONS (gevent): simultaneous connections per worker (100-10000); more wait in
# the backlog.
worker_connections = _kv["CONNECTIONS"]
# KV_THREADS (gthread): threads per worker (2-32): the connections served at once. Only
# for gthread: gunicorn would turn sync workers with threads > 1 into gthread.
threads = _kv["THREADS"] if worker_class == "gthread" else 1
# KV_TIMEOUT, seconds (10-120): a worker silent for longer is killed and replaced.
timeout = _kv["TIMEOUT"]
# Worker heartbeat files in memory: on a slow or read-only disk they can stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Seconds (5-60) in-flight requests get to finish after SIGTERM before workers are killed.
graceful_timeout = 20
# Seconds (1-75) an idle keep-alive connection is kept open; clients reuse connections.
keepalive = 5

# --- Request limits (anything larger is refused by gunicorn before Flask sees it) -----
# Bytes of the request line: "GET /items/<36-char id> HTTP/1.1" is 56; 4094 is the max.
limit_request_line = 1024
# Number of headers (1-32768) and bytes of one header (1-8190).
limit_request_fields = 50
limit_request_field_size = 8190

# --- Logging --------------------------------------------------------------------------
# Server log on stderr, level from KV_LOG_LEVEL.
errorlog = "-"
loglevel = _kv["LOG_LEVEL"]
# KV_ACCESS_LOG=1: one line per request on stdout. Off by default: it costs throughput.
accesslog = "-" if _kv["ACCESS_LOG"] else None
# Name the processes in ps/top.
proc_name = "kv-app"

# --- Control ----------------------------------------------------------------------------
# No control socket: its default path ($HOME/.gunicorn/gunicorn.ctl) is one per user, so
# two servers on one host (tests, blue/green swaps) would fight over it, and the image's
# user has no home. Manage the server with signals (TERM, HUP, USR2), as the README says.
control_socket_disable = True

# --- Hooks ------------------------------------------------------------------------------


def post_fork(server, worker):
    """Honour a SIGTERM that arrives while a new worker is still starting.

    Until the worker installs its own handlers (after gevent's monkey-patching, a few
    hundred ms) it runs the master's, which would swallow the signal: the worker would
    then live until graceful_timeout ran out and be killed. Marking it not alive makes
    it stop as soon as its loop starts.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: setattr(worker, "alive", False))


def on_reload(server):
    """SIGHUP: load the data file again, in the master, before new workers are forked.

    gunicorn then forks new workers (they serve the new data) and stops the old ones
    gracefully: no request fails and none is answered from a half-loaded store. A file
    that cannot be served is logged and the data in memory kept (the new workers serve
    it). Publish a new file by renaming it over KV_DATA_PATH, then `kill -HUP <master>`.
    """
    try:
        app = _create_app()
    except (_LoadError, _ConfigError) as e:
        server.log.error("reload refused, still serving the data loaded before: %s", e)
        return
    server.app.callable = app
    # wsgi.py's module-level app would keep the old data alive in the master.
    if "wsgi" in sys.modules:
        sys.modules["wsgi"].app = app


def post_request(worker, req, environ, resp):
    """gevent: let this worker's other connections run before this one's next request.

    A greenlet only yields when a read would block. On a busy machine a client's next
    request is often already waiting when its response is sent, so without this that
    connection keeps the worker and the others wait: p99 went from 160-330 ms to 10-20 ms
    at 32-64 connections, for about 10 us a request (scripts/bench_workers.sh).
    """
    if type(worker).__module__ == "gunicorn.workers.ggevent":  # whatever set the class
        gevent.idle()
