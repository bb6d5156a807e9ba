"""One write per answer: gunicorn sends a response's headers and then its body in two
sendall calls (two syscalls and, on a connection without delayed ACKs, two packets);
OneWriteResponse holds the headers back and sends them with the first piece of the body
(or alone, at the end, for an answer without one). Installed in each worker by
kv_app/gunicorn_conf.py (post_fork); the rest of gunicorn's Response is unchanged.
"""

from __future__ import annotations

from gunicorn.http import wsgi

# A body piece larger than this is not copied to join the headers: they go first.
_JOIN_AT_MOST = 64 * 1024


class _HeldBack:
    """A socket whose writes are held while `holding`, then sent with the next one."""

    __slots__ = ("sock", "held", "holding")

    def __init__(self, sock):
        self.sock = sock
        self.held = b""
        self.holding = False

    def sendall(self, data) -> None:
        if self.holding:
            self.held += data
            return
        if self.held:
            held, self.held = self.held, b""
            if len(data) <= _JOIN_AT_MOST:
                data = held + bytes(data)
            else:
                self.sock.sendall(held)
        self.sock.sendall(data)

    def flush(self) -> None:
        if self.held:
            held, self.held = self.held, b""
            self.sock.sendall(held)

    def __getattr__(self, name):  # sendfile, fileno ...: what was held goes first
        self.flush()
        return getattr(self.sock, name)


class OneWriteResponse(wsgi.Response):
    """gunicorn's Response, its headers sent with the first piece of its body."""

    def __init__(self, req, sock, cfg):
        super().__init__(req, _HeldBack(sock), cfg)

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        self.sock.holding = True
        try:
            super().send_headers()
        finally:
            self.sock.holding = False

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.sock.flush()


def install() -> None:
    """Make gunicorn build OneWriteResponse objects (wsgi.create names Response)."""
    wsgi.Response = OneWriteResponse
