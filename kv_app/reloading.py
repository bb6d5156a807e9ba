"""What either server (gunicorn, kv_app/gunicorn_conf.py, or granian,
kv_app/granian_server.py) does around the data in its main process: the metrics
directory made before the app loads, a reload that loads first and changes nothing if
that fails, and the swap that frees the old data at once."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import tempfile
from collections.abc import Callable

from kv_app import config
from kv_app.loader import LoadError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def metrics_dir(given: str | None) -> str | None:
    """Point prometheus_client's multiprocess mode (read when it is first imported, so
    this runs before kv_app's app is imported) at `given`, emptied of earlier runs' files
    (they would add up), or at a new directory; the directory made, if any, for the
    caller to remove on exit. Never one inherited from a parent process."""
    made = None
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.unlink(os.path.join(given, name))
    else:
        given = made = tempfile.mkdtemp(prefix="kv-app-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = given
    return made


class Interrupted(BaseException):
    """A stop signal arrived while a reload was loading."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame):
    raise Interrupted(signum)


def load_again(served, log: logging.Logger, stop: Callable[[int], None]):
    """SIGHUP: the store of the data KV_DATA_PATH names now, or None if anything failed
    (a bad file, a read error, no room under the memory limit, a bug): logged and counted,
    and nothing changes. A stop signal (TERM, INT, QUIT) during the load abandons it and
    is handed to `stop`: a shutdown never waits for a load. A snapshot found with other
    files under the directory it serves (copied over in place) is refused: the same
    version must never answer with other data."""
    from kv_app import app, metrics

    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        opened = app.open_store(config.resolve())
        directory = getattr(served, "directory", None)
        if directory is not None and getattr(opened, "directory", None) == directory:
            if opened.identity != served.identity:
                opened.close()
                raise LoadError(
                    served.changed() or f"{directory}: its data file changed since it was opened"
                )
        return opened
    except Interrupted as e:
        log.warning("reload abandoned: %s arrived", signal.Signals(e.signum).name)
        stop(e.signum)
        metrics.RELOADS.labels("abandoned").inc()
    except (LoadError, config.ConfigError) as e:
        log.error("reload refused, still serving the data loaded before: %s", e)
        metrics.RELOADS.labels("refused").inc()
    except Exception:  # MemoryError, a bug: the server must live on with its data
        log.exception("reload failed, still serving the data loaded before")
        metrics.RELOADS.labels("failed").inc()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return None


def swap(flask_app, store, log: logging.Logger) -> None:
    """Serve `store` from now on (new workers will), and give the old store's memory back
    to the system at once, not at some later collection: the main process should hold
    one copy of the data, not two."""
    from kv_app import app, metrics

    app.set_store(flask_app, store)
    version, pairs = store.version, len(store)
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to trim
            pass
    log.info("reload done: serving version %s, %s pairs", version, f"{pairs:,}")
    metrics.RELOADS.labels("succeeded").inc()
