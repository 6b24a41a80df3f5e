"""What makes a no-op converge cheap, checked without the lab: the operation order computed
without source reads is pyinfra's own, and the SSH socket is set to send at once.
benchmarks/converge.py measures the effect on lab hosts.

Every test runs three times (the `fence` fixture): with flowerbed's shortcuts installed on the
tested pyinfra, on a pyinfra of an unknown version, and on one whose replaced functions changed.
In the last two the shortcuts are not installed and the results are still pyinfra's own
(tests/unit/test_pyinfra_fence_units.py checks the one log line)."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path
from types import SimpleNamespace

import pyinfra
import pytest
from fence_helpers import fake_changed_functions, run_deploy_py_until_its_checks
from pyinfra.api.operation import solve_operation_consistency

from flowerbed import pyinfra_internals as internals
from flowerbed.pyinfra_internals import send_without_delay

HERE = __file__
# what `pyinfra INVENTORY deploy.py` runs
DEPLOY_PY = str(Path(__file__).resolve().parents[2] / "deploy.py")


@pytest.fixture(params=["tested pyinfra", "unknown version", "changed functions"], autouse=True)
def fence(request, monkeypatch):
    """The repository's deploy.py has run, the way pyinfra runs it, up to its checks, on the
    pyinfra of `param`: what is installed, flowerbed's entry point installed (the test does not
    call install(); were deploy.py to stop installing the shortcuts, the tested pyinfra's runs
    would go red)."""
    internals.uninstall()
    if request.param == "unknown version":
        monkeypatch.setattr(internals, "installed_version", lambda: "3.11.0")
    elif request.param == "changed functions":
        fake_changed_functions(monkeypatch)
    with monkeypatch.context() as during_the_run:
        run_deploy_py_until_its_checks(during_the_run, DEPLOY_PY)
    assert internals._applied, "deploy.py checked the fence's guards"
    yield request.param
    internals.uninstall()


def both_orders(state) -> tuple[list[int], list[int]]:
    return internals.PYINFRAS_OWN(state), internals.operation_order(state)  # one line: one frame


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


def orders_where_pyinfra_asks(state) -> tuple[list[int], list[int]]:
    """The order pyinfra's own call site gets (what is installed), and pyinfra's own function
    called from the same line."""
    host = SimpleNamespace(op_hash_order=[], loop_position=None)
    return list(solve_operation_consistency({"op"}, state, host)[0]), internals.PYINFRAS_OWN(state)


@pytest.mark.parametrize("caller", ["flowerbed", "not flowerbed"])
@pytest.mark.parametrize("deploy_file", [HERE, None, "/elsewhere/deploy.py"])
def test_pyinfra_orders_operations_with_it(monkeypatch, fence, caller, deploy_file):
    monkeypatch.setattr(pyinfra, "is_cli", True)
    if caller == "flowerbed":  # this file stands for flowerbed's code calling an operation
        monkeypatch.setattr(internals, "FLOWERBED_DIR", HERE.rsplit("/", 1)[0] + "/")
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=7)
    installed, pyinfras = orders_where_pyinfra_asks(state)
    assert installed == pyinfras
    module = importlib.import_module("pyinfra.api.operation")
    if fence == "tested pyinfra":
        assert module.get_operation_order_from_stack is not internals.PYINFRAS_OWN
    else:
        assert module.get_operation_order_from_stack is internals.PYINFRAS_OWN


def test_other_operations_get_pyinfras_own_function(monkeypatch):
    """An operation flowerbed's code does not call: pyinfra's function runs, not the walk."""
    monkeypatch.setattr(pyinfra, "is_cli", True)
    calls = []
    monkeypatch.setattr(internals, "PYINFRAS_OWN", lambda state: calls.append(state) or [7, 1])
    monkeypatch.setattr(internals, "operation_order", lambda *a: pytest.fail("the fast path"))
    state = SimpleNamespace(
        current_deploy_filename="/elsewhere/deploy.py", current_op_file_number=7
    )
    assert internals._order_for_flowerbeds_operations(state) == [7, 1]
    assert calls == [state]


def host_on(sock) -> SimpleNamespace:
    client = SimpleNamespace(get_transport=lambda: SimpleNamespace(sock=sock))
    return SimpleNamespace(connector=SimpleNamespace(client=client))


def test_the_ssh_socket_sends_without_delay(fence):
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        send_without_delay(host_on(client))
        assert bool(client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) == (
            fence == "tested pyinfra"
        )
        client.sendall(b"still works")
        accepted, _ = server.accept()
        with accepted:
            assert accepted.recv(11) == b"still works"


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
