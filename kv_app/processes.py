"""A kv-app server's processes and port, seen from outside: whether its port is free
before any data loads, the titles its processes show in ps/top, and which process is
the master listening on a port (for `kv-app reload --port`). Linux: reads /proc."""

from __future__ import annotations

import errno
import os
import socket

TITLE = "kv-app"


def cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port (one line), or None if it can.

    Binds and closes a socket as gunicorn and granian will (SO_REUSEADDR, so connections
    of an earlier server in TIME_WAIT are no obstacle): a port already in use is found
    before the data loads, not after (gunicorn then retried 5 times over 5 s, 10 lines).
    A master re-executed by USR2 (GUNICORN_FD) or started by systemd with its sockets
    (LISTEN_FDS) holds the port already: not checked.
    """
    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return None
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        return f"cannot listen on {where}: {e.strerror or e}"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return (
                    f"cannot listen on {where}: the port is already in use "
                    f"(another server? choose another port with --port or KV_PORT)"
                )
            return f"cannot listen on {where}: {e.strerror or e}"
    return None
