"""What makes a no-op converge cheap, checked without the lab: the operation order computed
without source reads is pyinfra's own, and the SSH socket is set to send at once.
benchmarks/converge.py measures the effect on lab hosts."""

from __future__ import annotations

import importlib
import socket
from types import SimpleNamespace

import pyinfra
import pytest

from flowerbed import oporder
from flowerbed.connection import send_without_delay

HERE = __file__


def both_orders(state) -> tuple[list[int], list[int]]:
    return oporder.PYINFRAS_OWN(state), oporder.operation_order(state)  # on one line: same frame


def one_call_deeper(state):
    return both_orders(state)


@pytest.mark.parametrize("deploy_file", [HERE, None, "/elsewhere/deploy.py"])
@pytest.mark.parametrize("is_cli", [True, False])
def test_the_operation_order_is_pyinfras_own(monkeypatch, deploy_file, is_cli):
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=7)
    pyinfras, ours = one_call_deeper(state)
    assert ours == pyinfras
    if deploy_file != "/elsewhere/deploy.py":
        assert len(ours) > 2, "the frames from the deploy file down are counted"


def test_pyinfra_orders_operations_with_it():
    oporder.install()
    module = importlib.import_module("pyinfra.api.operation")
    assert module.get_operation_order_from_stack is oporder.operation_order


def host_on(sock) -> SimpleNamespace:
    client = SimpleNamespace(get_transport=lambda: SimpleNamespace(sock=sock))
    return SimpleNamespace(connector=SimpleNamespace(client=client))


def test_the_ssh_socket_sends_without_delay():
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        send_without_delay(host_on(client))
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


class NotATcpSocket:
    """paramiko's sock through a ProxyCommand or a jump host's Channel: no `family`."""

    def __init__(self):
        self.options = []

    def setsockopt(self, *option):
        self.options.append(option)


def test_other_connections_are_left_alone():
    proxied = NotATcpSocket()
    send_without_delay(host_on(proxied))
    assert proxied.options == []
    left, right = socket.socketpair()  # a unix socket
    with left, right:
        send_without_delay(host_on(left))
    send_without_delay(SimpleNamespace(connector=SimpleNamespace(client=None)))  # not connected
    send_without_delay(SimpleNamespace(connector=SimpleNamespace()))  # @local, @docker...
