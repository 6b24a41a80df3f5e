"""Flower's socket kept across restarts (flowerbed/socket_keeper.py, the unit's
FileDescriptorStoreMax=) and nginx's second try at the same socket.

Two stand-ins for Flower run the keeper as flowerconfig.py starts it, with a stand-in for
tornado's bind_unix_socket; this test plays systemd: it receives the descriptor the first hands
over on its NOTIFY_SOCKET, holds it while the first exits, and passes it to the second as
LISTEN_FDS. tests/lab/test_rollout.py shows the same with systemd and Flower on six hosts.
"""

from __future__ import annotations

import array
import http.client
import os
import re
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from settings_helpers import settings_with
from test_decoy_units import Nginx

from flowerbed import memory_watchdog, socket_keeper
from flowerbed.flower import config_text
from flowerbed.inputs.edge import dashboard_site
from flowerbed.nginx import https_site_text

KEEPER_DIR = str(Path(socket_keeper.__file__).parent)

# argv: the socket's path, then the descriptor systemd passes (or nothing: a first start)
FAKE_FLOWER = f"""
import os, socket, sys, types
path, passed = sys.argv[1], sys.argv[2:]
if passed:  # as systemd passes a kept descriptor: fd 3, LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES
    os.dup2(int(passed[0]), 3)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="flower")
bound = []
def bind_unix_socket(file, mode=0o600, backlog=128):  # tornado's, as Flower calls it
    bound.append(file)
    if os.path.exists(file):
        os.unlink(file)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(file)
    os.chmod(file, mode)
    s.listen(backlog)
    s.setblocking(False)
    return s  # (socket.socket makes descriptors non-inheritable, as tornado's do)
sys.modules["tornado"] = types.ModuleType("tornado")
sys.modules["tornado.netutil"] = netutil = sys.modules["tornado"].netutil = types.ModuleType("n")
netutil.bind_unix_socket = bind_unix_socket
sys.path.insert(0, {KEEPER_DIR!r})
import socket_keeper
socket_keeper.start(path)
from tornado.netutil import bind_unix_socket  # Flower looks it up when it binds
listening = bind_unix_socket(path, mode=0o777)
assert not listening.getblocking() and not os.get_inheritable(listening.fileno())
assert socket_keeper.bound, "the watchdog would never see Flower ready"
print("bound" if bound else "adopted", flush=True)
listening.setblocking(True)
connection, _ = listening.accept()
connection.recv(100)
connection.sendall(str(os.getpid()).encode())
connection.close()
"""


class Systemd:
    """The notify socket a service's messages and descriptors reach."""

    def __init__(self, root: Path):
        self.address = str(root / "notify")
        self.channel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.channel.bind(self.address)
        self.channel.settimeout(10)

    def received(self) -> tuple[str, list[int]]:
        space = socket.CMSG_SPACE(array.array("i", [0]).itemsize)
        message, ancillary, _, _ = self.channel.recvmsg(4096, space)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        return message.decode(), list(fds)

    def nothing_more(self) -> bool:
        self.channel.settimeout(0.2)
        try:
            self.channel.recv(4096)
        except TimeoutError:
            return True
        return False


def flower(
    path: Path, systemd: Systemd, passed: int | None = None, notify_socket: str = ""
) -> subprocess.Popen:
    argv = [sys.executable, "-c", FAKE_FLOWER, str(path)]
    argv += [str(passed)] if passed is not None else []
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket or systemd.address}
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        pass_fds=(passed,) if passed is not None else (),
    )  # fmt: skip


def started(process: subprocess.Popen) -> str:
    line = process.stdout.readline().strip()
    assert line, process.communicate(timeout=10)
    return line


def asked(path: Path) -> socket.socket:
    """A client's request on the socket (connected before anyone accepts it)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(str(path))
    client.sendall(b"GET /")
    return client


@pytest.fixture
def root(tmp_path: Path) -> Path:
    short = Path(f"/tmp/fbk-{os.getpid()}-{tmp_path.name[-12:]}")  # sun_path: 108 bytes
    short.mkdir()
    yield short
    subprocess.run(["rm", "-rf", str(short)], check=True)


def test_a_request_made_while_flower_restarts_is_answered_by_the_new_process(root: Path):
    systemd, path = Systemd(root), root / "flower.sock"
    first = flower(path, systemd)
    assert started(first) == "bound"
    fds = stored(systemd)
    first.kill()  # a restart: the old process is gone, systemd still holds the socket
    first.wait(10)
    waiting = asked(path)  # no process listens: the request waits in the socket's queue
    second = flower(path, systemd, passed=fds[0])
    assert started(second) == "adopted", second.stderr.read()
    assert waiting.recv(100).decode() == str(second.pid)
    second.wait(10)
    assert systemd.nothing_more(), "the kept socket was handed over again"


def stored(systemd: Systemd) -> list[int]:
    """What a fresh bind tells systemd: drop any socket kept under the name, keep this one."""
    assert systemd.received() == ("FDSTOREREMOVE=1\nFDNAME=flower", [])
    message, fds = systemd.received()
    assert message == "FDSTORE=1\nFDNAME=flower" and len(fds) == 1, message
    return fds


def test_a_kept_socket_whose_file_is_gone_is_dropped_and_a_new_one_bound(root: Path):
    systemd, path = Systemd(root), root / "flower.sock"
    first = flower(path, systemd)
    assert started(first) == "bound"
    fds = stored(systemd)
    first.kill()
    first.wait(10)
    path.unlink()  # removed by hand: a client could never reach the kept one
    second = flower(path, systemd, passed=fds[0])
    assert started(second) == "bound"
    stored(systemd)
    assert asked(path).recv(100).decode() == str(second.pid)
    second.wait(10)


def test_a_notify_socket_that_refuses_leaves_flower_serving(root: Path):
    systemd, path = Systemd(root), root / "flower.sock"
    alone = flower(path, systemd, notify_socket=str(root / "gone"))
    assert started(alone) == "bound"
    assert asked(path).recv(100).decode() == str(alone.pid)
    alone.wait(10)
    assert "the socket is not kept across restarts" in alone.stderr.read()


@pytest.mark.parametrize(
    ("environ", "found"),
    [
        ({"LISTEN_PID": "7", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "flower"}, {"flower": 3}),
        ({"LISTEN_PID": "8", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "flower"}, {}),  # not ours
        ({"LISTEN_PID": "7", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "x:flower"},
         {"x": 3, "flower": 4}),
        ({"LISTEN_PID": "7", "LISTEN_FDS": "many"}, {}),
        ({}, {}),
    ],
)  # fmt: skip
def test_passed_descriptors_are_read_as_systemd_passes_them(environ, found):
    assert socket_keeper.passed_fds(environ, 7) == found


def test_flowerconfig_starts_the_keeper_at_the_sockets_path():
    settings = settings_with()
    text = config_text(settings.flower, settings.options)
    keeper = text.index("module.start(\n        path=")
    assert repr(settings.flower.socket) in text[keeper : keeper + 200]
    assert keeper < text.index("max_bytes="), "the keeper starts before the watchdog"


DROPPER = """
import socket, sys
listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listening.bind(sys.argv[1])
listening.listen(16)
print("listening", flush=True)
for n in range(2):
    connection, _ = listening.accept()
    connection.recv(4096)
    if n == 0:  # as Flower drops what it was answering when it stops for a restart
        connection.close()
        continue
    connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 3\\r\\n\\r\\nnew")
    connection.close()
"""


@pytest.mark.parametrize(("method", "answer"), [("GET", (200, "new")), ("POST", (502, None))])
def test_nginx_sends_a_get_flower_dropped_to_the_socket_again(root: Path, method, answer):
    """The site's upstream (a backup at the same socket) and its proxy_next_upstream, as
    rendered: a GET the stopping Flower dropped is answered by the new one; a POST (a control,
    a task's apply) is never sent twice: 502, the documented limit."""
    settings = settings_with()
    site_text = https_site_text(
        dashboard_site(settings, "flower.example.com"), settings.dashboard_proxy
    )
    upstream = re.search(r"upstream flowerbed_flower \{.*?\n\}", site_text, re.S).group(0)
    retry = re.search(r"proxy_next_upstream [^;]*;", site_text).group(0)
    path = root / "flower.sock"
    (root / "users.map").write_text("")  # the decoy's map, which Nginx loads (not used here)
    upstream = upstream.replace(settings.flower.socket, str(path))
    dropper = subprocess.Popen(
        [sys.executable, "-c", DROPPER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert dropper.stdout.readline().strip() == "listening"
        server = (
            f"location / {{ proxy_http_version 1.1; {retry} proxy_pass http://flowerbed_flower; }}"
        )
        with Nginx(root, server, extra_http=upstream) as nginx:
            status, body = sent(nginx.port, method)
            assert (status, body if status == 200 else None) == answer, nginx.error_log()
            assert "prematurely closed" in nginx.error_log()  # the first try was dropped
    finally:
        dropper.kill()


def sent(port: int, method: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, "/", body=b"" if method == "POST" else None)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_the_memory_watchdog_asks_the_keeper_whether_flower_is_ready(root: Path, monkeypatch):
    """The socket file outlives a restart: only the keeper in the same process knows whether
    this Flower has bound (adopted) it, so has loaded its state."""
    path = root / "flower.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as earlier:
        earlier.bind(str(path))  # as the previous process left it, just now
    keeper = types.ModuleType("flowerbed_socket_keeper")
    keeper.bound = []
    monkeypatch.setitem(sys.modules, "flowerbed_socket_keeper", keeper)
    assert not memory_watchdog.bound_since(str(path), time.time())
    keeper.bound.append(time.time())
    assert memory_watchdog.bound_since(str(path), time.time())
