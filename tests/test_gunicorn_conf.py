"""kv_app/gunicorn_conf.py: its hooks called directly, and its logging on a real server."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from kv_app import app as app_module
from kv_app import gunicorn_conf
from kv_app.api import STORE
from kv_app.app import create_app
from kv_app.loader import LoadError


class FakeServer:
    """What the hooks use of gunicorn's Arbiter: app.callable, log, signal(), reload()."""

    def __init__(self, app):
        self.app = SimpleNamespace(callable=app)
        self.log = logging.getLogger("test.arbiter")
        self.log.reopen_files = lambda: None
        self.queued: list[int] = []
        self.cycles = 0  # gunicorn's own reloads: new workers forked

    def signal(self, sig, frame):
        self.queued.append(sig)

    def reload(self):
        """SIGHUP as when_ready leaves it: the data first, gunicorn's reload if it loaded."""

        def gunicorn_reload():
            self.cycles += 1
            gunicorn_conf.on_reload(self)  # gunicorn calls the hook, then forks workers

        gunicorn_conf._reload(self, gunicorn_reload)


@pytest.fixture
def server(data_file, monkeypatch):
    monkeypatch.setenv("KV_DATA_PATH", str(data_file))
    return FakeServer(create_app())


@pytest.mark.parametrize(
    "failure, logged",
    [
        (LoadError("x.data:3: key is not a UUID"), "reload refused"),
        (MemoryError(), "reload failed"),
        (RuntimeError("a bug"), "reload failed"),
        (OSError(5, "Input/output error"), "reload failed"),
    ],
)
def test_a_failed_reload_keeps_the_data(server, monkeypatch, caplog, failure, logged):
    """Defect 3: only the loader's errors were caught; anything else killed the master."""
    store = server.app.callable.extensions[STORE]

    def fail(settings):
        raise failure

    monkeypatch.setattr(app_module, "open_store", fail)
    server.reload()  # does not raise
    assert server.app.callable.extensions[STORE] is store
    assert logged in caplog.text
    assert server.cycles == 0  # the same workers serve on: none forked for nothing


def test_a_reload_swaps_the_store_and_restores_the_signal_handlers(
    server, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    handlers = {sig: signal.getsignal(sig) for sig in gunicorn_conf._STOP_SIGNALS}
    path = tmp_path / "new.data"
    path.write_text("8a35eb59-62b3-481c-8875-1f248df4c952 new\n")
    monkeypatch.setenv("KV_DATA_PATH", str(path))
    server.reload()
    assert server.cycles == 1
    store = server.app.callable.extensions[STORE]
    assert dict(store) == {"8a35eb59-62b3-481c-8875-1f248df4c952": "new"}
    assert f"reload done: serving version {store.version}, 1 pairs" in caplog.text
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers


def test_a_stop_signal_abandons_the_load_and_is_handed_back(server, monkeypatch, caplog):
    store = server.app.callable.extensions[STORE]

    def slow(settings):
        signal.raise_signal(signal.SIGTERM)  # as if it came during the load
        raise AssertionError("the load went on")

    monkeypatch.setattr(app_module, "open_store", slow)
    server.reload()
    assert server.queued == [signal.SIGTERM] and server.cycles == 0
    assert server.app.callable.extensions[STORE] is store
    assert "reload abandoned: SIGTERM arrived" in caplog.text


def _req(method, path, **headers):
    closed = threading.Event()
    return SimpleNamespace(
        method=method,
        path=path,
        headers=[(k.upper().replace("_", "-"), v) for k, v in headers.items()],
        force_close=closed.set,
        closed=closed,
    )


@pytest.mark.parametrize(
    "req, closes",
    [
        (_req("GET", "/items/x"), False),
        (_req("POST", "/items/batch", content_length="100"), False),
        (_req("POST", "/items/batch", content_length=str(1000 * 64 + 1024)), False),
        (_req("POST", "/items/batch", content_length=str(1000 * 64 + 1025)), True),
        (_req("POST", "/items/batch", transfer_encoding="chunked"), True),
        (_req("GET", "/items/x", content_length="5"), True),
        (_req("GET", "/items/x", content_length="0"), False),
        (_req("POST", "/nope", content_length="5"), True),
        (_req("PUT", "/items/batch", content_length="5"), True),
    ],
)
def test_pre_request_closes_when_a_body_will_not_be_read(req, closes):
    gunicorn_conf.pre_request(None, req)
    assert req.closed.is_set() == closes


LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")


def test_one_log_format_and_one_level(start_server, data_file):
    """Defect 8: KV_LOG_LEVEL did not apply to kv_app's logger, and its lines had another
    timestamp format than gunicorn's."""
    server = start_server(data_file, env={"KV_MAX_BATCHES": "5"})
    lines = server.log().splitlines()
    assert lines and all(LOG_LINE.match(line) for line in lines), lines
    assert any("loaded 2,000 pairs" in line for line in lines)
    assert any(
        "[WARNING] KV_MAX_BATCHES is not a kv_app setting, ignored (did you mean KV_MAX_BATCH?)"
        in line
        for line in lines
    )
    quiet = start_server(data_file, "--log-level", "warning")
    assert "loaded 2,000 pairs" not in quiet.log() and "Booting worker" not in quiet.log()


def test_importing_the_settings_only_reads_them(tmp_path):
    """Importing kv_app.gunicorn_conf (as gunicorn, a test or a user's own config does)
    changes nothing in the process: it once made a directory, set PROMETHEUS_MULTIPROC_DIR
    (inherited by every server a test started), caught SIGHUP and rewired logging. That
    happens in the master's set-up, which gunicorn runs before loading the app."""
    probe = """
import logging, os, signal, sys
before = (dict(os.environ), signal.getsignal(signal.SIGHUP),
          list(logging.getLogger("kv_app").handlers), set(os.listdir(sys.argv[1])))
import kv_app.gunicorn_conf as conf
after = (dict(os.environ), signal.getsignal(signal.SIGHUP),
         list(logging.getLogger("kv_app").handlers), set(os.listdir(sys.argv[1])))
assert before == after, (before, after)
assert "prometheus_client" not in sys.modules
conf._set_up_master()  # what gunicorn's first call, the logger's setup, runs
assert os.environ["PROMETHEUS_MULTIPROC_DIR"].startswith(sys.argv[1]), os.environ
assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, before[1])
assert logging.getLogger("kv_app").handlers
conf.on_exit(None)
assert set(os.listdir(sys.argv[1])) == before[3]
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(TMPDIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR="/inherited")
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
