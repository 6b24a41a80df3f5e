"""Shared fixtures: one lab per test session, fresh hosts on request.

The lab (lab/lab.py) is brought up once (idempotent: a running lab is reused) and shared
by every test; a test that must start clean asks `fresh_host` for a new host (~2 s).
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values

REPO = Path(__file__).resolve().parent.parent
LAB_CLI = ["python3", str(REPO / "lab" / "lab.py")]
LAB_HOSTS = int(os.environ.get("HOSTS", "3"))


def run(args: list[str], timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Lab:
    state: dict

    @classmethod
    def load(cls) -> Lab:
        return cls(json.loads((REPO / ".lab" / "state.json").read_text()))

    @property
    def base_hosts(self) -> list[dict]:
        """h1..hN, shared by the whole session (fresh hosts have other names); never empty, so
        a loop over them always checks something."""
        hosts = [h for h in self.state["hosts"] if h["name"][1:].isdigit() and h["name"][0] == "h"]
        assert hosts, "the lab has no hosts h1..hN: run `make lab-up`"
        return hosts

    @property
    def dashboard_login(self) -> tuple[str, str]:
        """(user, password): the lab's first dashboard login, the one every login test uses."""
        first = self.secrets["FLOWERBED_DASHBOARD_USERS"].split(",")[0]
        user, _, password = first.partition(":")
        assert user and password, "FLOWERBED_DASHBOARD_USERS in .lab/lab.env is user:password"
        return user, password

    def host(self, name: str) -> dict:
        return next(h for h in self.state["hosts"] if h["name"] == name)

    @property
    def secrets(self) -> dict[str, str]:
        # read as the deploy reads it (rotate.py may write quoted values)
        return {k: v or "" for k, v in dotenv_values(self.state["secrets_file"]).items()}

    def ssh(
        self, name: str, command: str | list[str], timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess:
        """Run a command on a host as root (a string goes to the host's shell)."""
        if isinstance(command, list):
            command = shlex.join(command)
        return run([*LAB_CLI, "ssh", name, command], timeout, check)

    def in_namespace(
        self, namespace: str, command: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a command from one of the lab's client namespaces (lab-allowed, lab-denied)."""
        return run(["ip", "netns", "exec", namespace, *command], timeout)


def lab_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run([*LAB_CLI, *args], timeout=timeout, check=True)


@pytest.fixture(scope="session")
def lab() -> Lab:
    lab_cli("up", "--hosts", str(LAB_HOSTS))
    return Lab.load()


_fresh_names = itertools.count(1)


class FreshHosts:
    """The one way tests get a clean host: `boot()` makes one, `remove_all()` removes them."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.made: list[str] = []

    def __call__(self, distro: str = "bookworm", prefix: str = "f") -> dict:
        name = f"{prefix}{os.getpid() % 1000}x{next(_fresh_names)}"
        self.made.append(name)  # before host-up: a half-booted host is removed too
        lab_cli("host-up", name, "--distro", distro)
        self.lab.state = Lab.load().state
        return self.lab.host(name)

    def remove_all(self) -> None:
        while self.made:
            lab_cli("host-down", self.made.pop())
        self.lab.state = Lab.load().state


@pytest.fixture
def fresh_host(lab: Lab):
    """A factory for new, clean hosts; each is removed when the test ends."""
    hosts = FreshHosts(lab)
    try:
        yield hosts
    finally:
        hosts.remove_all()


@pytest.fixture(scope="module")
def module_hosts(lab: Lab):
    """`fresh_host` for a module's shared hosts: removed when the module's tests end."""
    hosts = FreshHosts(lab)
    try:
        yield hosts
    finally:
        hosts.remove_all()


def pytest_collection_modifyitems(items):
    """Tests marked `lab_lifecycle` tear the shared lab down: they run last."""
    items.sort(key=lambda item: item.get_closest_marker("lab_lifecycle") is not None)
