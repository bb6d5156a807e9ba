"""Bounds on what a slow sender of a request body holds in a gunicorn worker: a deadline
for the whole body, and a number of bodies the worker waits for at once (kv_app/
gunicorn_conf.py sets both, in pre_request and post_request). They work on the socket
gunicorn's body reader reads from, so any worker class is bounded the same way."""

from __future__ import annotations

import threading
import time

from kv_app import api

_WAITING = [0]  # readers of this worker now waiting for body bytes
_WAITING_LOCK = threading.Lock()  # gthread: readers in several threads


class _BodyDeadline:
    """The client socket as the request's body reader sees it: a recv() takes what has
    arrived; else it waits, at most until the body's deadline (then api.BodyTimedOut:
    408, connection closed), and only if fewer than the worker's body slots are waiting
    already (else api.BodyRefused at once: 503)."""

    def __init__(self, sock, seconds: float, slots: int | None):
        self.sock = sock
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.timeout_before = sock.gettimeout()
        self.slots = slots

    def recv(self, size: int) -> bytes:
        self.sock.settimeout(0.0)
        try:
            return self.sock.recv(size)  # what has arrived: no wait, no slot
        except (BlockingIOError, TimeoutError):
            pass
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._late()
        with _WAITING_LOCK:
            waiting = _WAITING[0]
            if self.slots is None or waiting < self.slots:
                _WAITING[0] += 1
        if self.slots is not None and waiting >= self.slots:
            raise api.BodyRefused(
                f"this worker is waiting for {waiting:,} request bodies, as many as it may "
                "at once; retry"
            )
        try:
            self.sock.settimeout(left)
            return self.sock.recv(size)
        except TimeoutError:
            raise self._late() from None
        finally:
            with _WAITING_LOCK:
                _WAITING[0] -= 1

    def _late(self) -> api.BodyTimedOut:
        return api.BodyTimedOut(f"request body not received within {self.seconds:g} s")

    def __getattr__(self, name):
        return getattr(self.sock, name)


def bound(req, seconds: float, slots: int | None) -> None:
    """From now on, req's body must arrive within seconds, and waits for it take one of
    slots (None: no limit) while they wait."""
    unreader = getattr(req, "unreader", None)
    if unreader is not None and hasattr(unreader, "sock"):
        unreader.sock = _BodyDeadline(unreader.sock, seconds, slots)


def unbound(req) -> None:
    """After the request: the connection's socket as it was (the next request on it has
    its own deadline)."""
    unreader = getattr(req, "unreader", None)
    bounded = getattr(unreader, "sock", None)
    if isinstance(bounded, _BodyDeadline):
        unreader.sock = bounded.sock
        bounded.sock.settimeout(bounded.timeout_before)
