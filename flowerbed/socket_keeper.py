"""Flower's listening socket kept across restarts: runs inside Flower, started by flowerconfig.py.

A restart used to close Flower's unix socket: for the second or so until the new process bound
a new one, nginx answered 502. systemd keeps the file descriptors a service hands it
(`FDSTORE=1` on $NOTIFY_SOCKET; the unit's FileDescriptorStoreMax=1 and NotifyAccess=main) for as
long as the service runs or a job for it is queued, and passes them to the next process of a
restart, automatic or `systemctl restart` (LISTEN_FDS, from fd 3). The unit keeps the socket's
directory across restarts too (RuntimeDirectoryPreserve=restart). So a connection that arrives
while Flower restarts waits in the socket's queue (tornado's backlog, 128) and the new process
answers it; a `systemctl stop` closes the socket and removes its directory, as before. The
first restart onto a Flower with this keeper still has the old gap: the one stopping never
handed its socket over.

Flower binds its socket in `start_http_server` with tornado.netutil.bind_unix_socket, looked up
when it is called: `start` puts `bind_or_adopt` in its place, which adopts the kept socket when
systemd passed one still listening at the socket's path, and otherwise binds a new one as
tornado does and hands it to systemd. A failure to reach systemd is logged, never fatal.
Standard library only (besides tornado, which Flower runs on): this file runs on the host's
Python.
"""

from __future__ import annotations

import array
import os
import socket
import stat
import sys
import time

FD_NAME = "flower"  # the stored descriptor's name (LISTEN_FDNAMES)
FIRST_FD = 3  # SD_LISTEN_FDS_START
# When Flower bound or adopted its socket: it has loaded its state by then (the memory
# watchdog, in the same process, reads this rather than the socket file's time, which a
# restart now keeps)
bound: list[float] = []


def notify(message: str, fds: tuple[int, ...] = ()) -> bool:
    """`message` to systemd ($NOTIFY_SOCKET), with `fds` attached; False outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as channel:
            channel.sendmsg([message.encode()], rights, 0, address)
    except OSError as error:  # a stale or foreign $NOTIFY_SOCKET: Flower serves all the same
        log(f"systemd's notify socket refused {message.split(chr(10))[0]}: {error}")
        return False
    return True


def passed_fds(environ: dict[str, str], pid: int) -> dict[str, int]:
    """The descriptors systemd passed this process, by name (sd_listen_fds' protocol)."""
    if environ.get("LISTEN_PID") != str(pid):
        return {}
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return {}
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    return {names[i] if i < len(names) else "": FIRST_FD + i for i in range(max(count, 0))}


def listening_at(listening: socket.socket, path: str) -> bool:
    """`listening` is a stream socket listening at `path`, and `path` is still a socket."""
    try:
        at_path = stat.S_ISSOCK(os.stat(path).st_mode)
        name = listening.getsockname()
        kind = listening.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
        accepting = listening.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        return False
    return at_path and name == path and kind == socket.SOCK_STREAM and bool(accepting)


def adopted(path: str) -> socket.socket | None:
    """The socket systemd kept for `path`, if it passed one still listening there (not one
    whose file was removed by hand: `bind_or_adopt` replaces that one in systemd's store)."""
    fd = passed_fds(dict(os.environ), os.getpid()).get(FD_NAME)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # read once: nothing Flower starts takes them for its own
    if fd is None:
        return None
    try:
        kept = socket.socket(fileno=fd)
    except OSError:
        return None
    if listening_at(kept, path):
        kept.setblocking(False)
        os.set_inheritable(kept.fileno(), False)  # as sd_listen_fds leaves it: Flower's own
        return kept
    kept.close()
    return None


def kept(bind, path: str):
    """tornado's bind_unix_socket for Flower's socket `path`: the kept socket, or a new one
    (bound by `bind`) handed to systemd. Other paths are bound as tornado would."""

    def bind_or_adopt(file: str, *args, **kwargs) -> socket.socket:
        if file != path:
            return bind(file, *args, **kwargs)
        found = adopted(path)
        if found is not None:
            log(f"serving on the socket systemd kept across the restart ({path})")
        else:
            found = bind(file, *args, **kwargs)
            # whatever systemd still holds under the name (a socket whose file is gone, one
            # passed some other way) goes first: it keeps one, and would refuse this one
            notify(f"FDSTOREREMOVE=1\nFDNAME={FD_NAME}")
            if not notify(f"FDSTORE=1\nFDNAME={FD_NAME}", (found.fileno(),)):
                log("the socket is not kept across restarts (not started by systemd)")
        bound.append(time.time())  # the memory watchdog's "Flower has loaded its state"
        return found

    return bind_or_adopt


def log(line: str) -> None:
    print(f"flowerbed socket keeper: {line}", file=sys.stderr, flush=True)


def start(path: str) -> None:
    """Called by flowerconfig.py, before Flower binds its socket at `path`."""
    from tornado import netutil

    netutil.bind_unix_socket = kept(netutil.bind_unix_socket, path)
