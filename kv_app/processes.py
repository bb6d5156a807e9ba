"""A kv-app server's processes and port, seen from outside: whether its port is free
before any data loads, the titles its processes show in ps/top, and which process is
the master listening on a port (for `kv-app reload --port`). Linux: reads /proc."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

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


# --- Process titles ---------------------------------------------------------------------


def master_title(host: str, port: int, data_path: str | None) -> str:
    """What ps shows for the master: `kv-app master 127.0.0.1:8123 /srv/kv/current`."""
    data = os.path.abspath(data_path) if data_path else "(no data path)"
    return f"{TITLE} master {host}:{port} {data}"


def worker_title(host: str, port: int) -> str:
    """What ps shows for a worker: `kv-app worker 127.0.0.1:8123`."""
    return f"{TITLE} worker {host}:{port}"


def set_title(title: str) -> None:
    """Set this process's title (ps, top, /proc/PID/cmdline), if setproctitle is there."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # an install without it: the titles are only a convenience
        return
    setproctitle(title)


# --- Finding the master on a port --------------------------------------------------------

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


class NotFound(LookupError):
    """No kv-app master could be found: the message says what was looked at."""


def listening_inodes(port: int) -> set[int]:
    """The inodes of the sockets listening on TCP port (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port and inode:
                inodes.add(inode)
    return inodes


def holders(inodes: set[int]) -> set[int]:
    """The PIDs of the processes with one of these sockets open (/proc/PID/fd)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    found.add(int(pid))
                    break
            except OSError:
                continue
    return found


def parent(pid: int) -> int | None:
    """The parent PID of pid, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and ')'


def title(pid: int) -> str:
    """The title (command line) of pid, as ps shows it; '' once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def is_master(pid: int) -> bool:
    """Does pid's title say it is a kv-app master?"""
    return title(pid).startswith(f"{TITLE} master ")


@dataclass(frozen=True)
class Master:
    pid: int
    how: str  # "port 8123" or "pid file /run/kv.pid"


def master_on_port(port: int) -> Master:
    """The kv-app master listening on port (127.0.0.1, 0.0.0.0 or any address): of the
    processes holding the listening socket (the master and its workers), the one whose
    parent is not one of them. NotFound when there is none, or it is no kv-app master."""
    inodes = listening_inodes(port)
    if not inodes:
        raise NotFound(f"nothing is listening on port {port}")
    pids = holders(inodes)
    if not pids:
        raise NotFound(
            f"a socket listens on port {port}, but no process of this user holds it "
            "(another user's? try as that user, or with --pid-file)"
        )
    roots = sorted(pid for pid in pids if parent(pid) not in pids)
    masters = [pid for pid in roots if is_master(pid)]
    if len(masters) == 1:
        return Master(masters[0], f"port {port}")
    if not masters:
        shown = ", ".join(f"pid {pid} ({title(pid)[:60]})" for pid in roots)
        raise NotFound(f"port {port} is not a kv-app server's: it is held by {shown}")
    raise NotFound(f"several kv-app masters listen on port {port}: pids {masters}")


def master_from_pid_file(path: str) -> Master:
    """The kv-app master whose PID is in path; NotFound if the file is missing or stale."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as e:
        raise NotFound(f"cannot read the pid file {path}: {e.strerror}") from None
    if not text.isdigit():
        raise NotFound(f"{path} holds no PID: {text[:40]!r}")
    pid = int(text)
    if not title(pid):
        raise NotFound(f"no process {pid} (the pid file {path} is stale: is the server running?)")
    if not is_master(pid):
        raise NotFound(f"process {pid} of {path} is not a kv-app master: {title(pid)[:60]}")
    return Master(pid, f"pid file {path}")


def url(host: str, port: int) -> str:
    """The base URL a browser on this machine reaches host:port at (a wildcard address:
    through 127.0.0.1)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"
