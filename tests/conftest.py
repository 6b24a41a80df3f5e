"""Shared fixtures: one lab per test session, fresh hosts on request.

The lab (lab/lab.py) is brought up once (idempotent: a running lab is reused) and shared
by every test; a test that must start clean asks `fresh_host` for a new host (~2 s).

Which Debian the hosts run follows $FLOWERBED_TEST_DISTRO, which `make test DISTRO=...` sets
(not $DISTRO itself: lab.py reads that, and knows no "mixed"): trixie, bookworm or mixed.
`trixie` or `bookworm` puts every host on it; `mixed` (make test's default) runs h1 and h3 on
trixie and h2 on bookworm, and a fresh host's release is decided by the test asking for it
(`fresh_distro`: the same whatever ran before or beside it). Unset (a bare `pytest`),
the shared hosts keep the distro they run and fresh hosts are bookworm. A test that names a
distro (`fresh_host(distro="trixie")`) gets it whatever the variable says.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shlex
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_helpers import run_deploy
from dotenv import dotenv_values

REPO = Path(__file__).resolve().parent.parent
LAB_CLI = ["python3", str(REPO / "lab" / "lab.py")]
LAB_HOSTS = int(os.environ.get("HOSTS", "3"))
DISTRO = os.environ.get("FLOWERBED_TEST_DISTRO", "")
DISTROS = ("bookworm", "trixie")
MIXED = ("trixie", "bookworm")  # h1, h2, h3, ... and fresh hosts in turn
assert DISTRO in ("", "mixed", *DISTROS), f"{DISTRO!r}: the distro is bookworm, trixie or mixed"
_fresh_asked: collections.Counter[str] = collections.Counter()


def shared_host_distro(number: int) -> str:
    """The distro of the shared host hN when mixed, or under a single distro."""
    return MIXED[(number - 1) % len(MIXED)] if DISTRO == "mixed" else DISTRO


def fresh_distro(owner: str | None = None) -> str:
    """The distro of a fresh host nobody asked a distro for. Under mixed, its owner (the test
    for `fresh_host`, the module for `module_hosts` and a module's own `host-up`) and how many
    hosts it asked for before decide: its hosts alternate from a release its id picks, whatever
    ran before it or beside it, and a rerun of some of a module's tests gets the same ones."""
    if DISTRO != "mixed":
        return DISTRO or "bookworm"
    if owner is None:  # the module of pytest's current test
        owner = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0]
    asked = _fresh_asked[owner]
    _fresh_asked[owner] += 1
    return MIXED[(zlib.crc32(owner.encode()) + asked) % len(MIXED)]


def run(args: list[str], timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{shlex.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def is_base_host(name: str) -> bool:
    """h1..hN: the session's shared hosts."""
    return name[:1] == "h" and name[1:].isdigit()


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
        hosts = [h for h in self.state["hosts"] if is_base_host(h["name"])]
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

    def dashboard_status(self, fqdn: str, address: str, path: str = "/") -> str:
        """The HTTP status of https://<fqdn><path> at `address`, with the lab's dashboard login
        and the lab's ACME root as the only trusted CA."""
        user, password = self.dashboard_login
        return run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
             self.state["acme"]["root"], "--resolve", f"{fqdn}:443:{address}",
             "-u", f"{user}:{password}", f"https://{fqdn}{path}"],
            timeout=30, check=True,
        ).stdout  # fmt: skip

    def in_namespace(
        self, namespace: str, command: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a command from one of the lab's client namespaces (lab-allowed, lab-denied)."""
        return run(["ip", "netns", "exec", namespace, *command], timeout)


def lab_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`lab.py ARGS`; without `--distro`, `host-up` gets the next fresh distro and `up` puts
    h1..hN each on its distro (see `lab_up`)."""
    if args[:1] == ("host-up",) and "--distro" not in args:
        args = (*args, "--distro", fresh_distro())
    if args[:1] == ("up",) and "--distro" not in args:
        count = int(args[args.index("--hosts") + 1]) if "--hosts" in args else LAB_HOSTS
        return lab_up(count, timeout)
    return run([*LAB_CLI, *args], timeout=timeout, check=True)


def lab_up(count: int, timeout: float = 600) -> subprocess.CompletedProcess:
    """The lab with h1..h`count`, each on its distro (`shared_distros`)."""
    distros = shared_distros(count)
    if len(set(distros)) <= 1:
        return lab_cli(
            "up", "--hosts", str(count), "--distro", (distros or ["bookworm"])[0], timeout=timeout
        )
    done = lab_cli("up", "--hosts", "0", "--distro", distros[0], timeout=timeout)  # services
    for number, distro in enumerate(distros, 1):
        done = lab_cli("host-up", f"h{number}", "--distro", distro, timeout=timeout)
    return done


def shared_distros(count: int) -> list[str]:
    """The distro of h1..hN: the chosen one, or unset the one each runs (bookworm if
    it does not exist yet), so a bare `pytest` never rebuilds the shared hosts."""
    if DISTRO:
        return [shared_host_distro(number) for number in range(1, count + 1)]
    state = REPO / ".lab" / "state.json"
    hosts = json.loads(state.read_text())["hosts"] if state.exists() else []
    running = {h["name"]: h["distro"] for h in hosts}
    return [running.get(f"h{number}", "bookworm") for number in range(1, count + 1)]


@dataclass(frozen=True)
class UsersLab:
    """A lab that was up before the session (`make demo`, `make lab-up`): the tests that take
    the lab down put it back with `restore_users_lab`, with the same secrets (so the same
    dashboard login) and, if its hosts had been deployed, deployed again."""

    secrets: str
    hosts: list[str]
    deployed: bool


_users_lab: list[UsersLab] = []  # set once, by the `lab` fixture


def users_lab_before(before: dict, lab: Lab) -> UsersLab | None:
    """The lab as .lab/state.json had it before the session (`before`), now that it is up."""
    names = [h["name"] for h in before.get("hosts", []) if is_base_host(h["name"])]
    secrets = Path(lab.state["secrets_file"])
    if not names or not secrets.exists():
        return None
    flower = lab.ssh(names[0], ["systemctl", "is-active", "flower.service"])
    return UsersLab(secrets.read_text(), names, flower.stdout.strip() == "active")


def users_lab() -> UsersLab | None:
    return _users_lab[0] if _users_lab else None


def restore_users_lab(lab: Lab) -> None:
    """The lab as the user had it before the session, if they had one (else nothing)."""
    if not _users_lab:
        return
    users = _users_lab[0]
    secrets = REPO / ".lab" / "lab.env"
    if not secrets.exists() or secrets.read_text() != users.secrets:
        secrets.parent.mkdir(exist_ok=True)
        fresh = secrets.with_suffix(".restored")
        fresh.touch(mode=0o600)
        fresh.write_text(users.secrets)
        fresh.rename(secrets)  # `lab up` keeps the secrets it finds
    lab_up(len(users.hosts))
    lab.state = Lab.load().state
    if users.deployed:
        deployed = run_deploy(users.hosts)
        assert deployed.ok, f"the user's lab could not be deployed again:\n{deployed.explain()}"


@pytest.fixture(scope="session")
def lab() -> Lab:
    state = REPO / ".lab" / "state.json"
    if os.environ.get("FLOWERBED_LAB_UP"):  # tests/run_suite.py brought it up for its shards
        return Lab.load()
    before = json.loads(state.read_text()) if state.exists() else {}
    lab_up(LAB_HOSTS)
    lab = Lab.load()
    if users := users_lab_before(before, lab):
        _users_lab.append(users)
    return lab


_fresh_names = itertools.count(1)


class FreshHosts:
    """The one way tests get a clean host: calling it boots one; leaving its `with` block (or
    `remove_all()`) removes every host it made."""

    def __init__(self, lab: Lab, owner: str):
        self.lab, self.owner = lab, owner  # a test's or a module's id (`fresh_distro`)
        self.made: list[str] = []

    def __call__(self, distro: str | None = None, prefix: str = "f") -> dict:
        name = f"{prefix}{os.getpid() % 1000}x{next(_fresh_names)}"
        self.made.append(name)  # before host-up: a half-booted host is removed too
        lab_cli("host-up", name, "--distro", distro or fresh_distro(self.owner))
        self.lab.state = Lab.load().state
        return self.lab.host(name)

    def remove_all(self) -> None:
        while self.made:
            lab_cli("host-down", self.made.pop())
        self.lab.state = Lab.load().state

    def __enter__(self) -> FreshHosts:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove_all()


@pytest.fixture
def fresh_host(lab: Lab, request):
    """A factory for new, clean hosts; each is removed when the test ends."""
    with FreshHosts(lab, request.node.nodeid) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def module_hosts(lab: Lab, request):
    """`fresh_host` for a module's shared hosts: removed when the module's tests end."""
    with FreshHosts(lab, request.node.nodeid) as hosts:
        yield hosts


# The fixtures that bring up or use the lab. Any fixture that asks for one of them has `lab` in
# its closure too, so a test reaching the lab through a fixture of its own is caught as well.
LAB_FIXTURES = ("lab", "fresh_host", "module_hosts")
TESTS = Path(__file__).resolve().parent
UNIT_TESTS = TESTS / "unit"
LAB_TESTS = TESTS / "lab"


def layout_offences(items) -> list[str]:
    """Each test that breaks the layout, with why: one that uses the lab (directly or through a
    fixture: `item.fixturenames` is the closure) must be marked `lab`; tests/lab/ holds only
    tests marked `lab`, tests/unit/ only unmarked ones; a test module lives in one of the two."""
    offences = []
    for item in items:
        marked = item.get_closest_marker("lab") is not None
        uses = [name for name in LAB_FIXTURES if name in getattr(item, "fixturenames", ())]
        path = item.path.resolve()
        if uses and not marked:
            offences.append(f"{item.nodeid}: uses {', '.join(uses)} but is not marked `lab`")
        if path.is_relative_to(LAB_TESTS):
            if not marked:
                offences.append(f"{item.nodeid}: in tests/lab/ but not marked `lab`")
        elif path.is_relative_to(UNIT_TESTS):
            if marked:
                offences.append(f"{item.nodeid}: in tests/unit/ but marked `lab`")
        elif path.is_relative_to(TESTS):
            where = "tests/lab/" if marked or uses else "tests/unit/"
            offences.append(f"{item.nodeid}: not in tests/unit/ or tests/lab/ (move it to {where})")
    return offences


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: `-m "not lab"` checks every test too
def pytest_collection_modifyitems(items):
    """Fails the run on a test that breaks the layout (`layout_offences`). Then the order: unit
    tests first, lab tests next; those marked `lab_lifecycle` tear the shared lab down: they run
    last."""
    if offences := layout_offences(items):
        raise pytest.UsageError(
            "tests out of place (docs/lab-and-tests.md, Tests layout):\n  " + "\n  ".join(offences)
        )
    items.sort(
        key=lambda item: (
            item.get_closest_marker("lab_lifecycle") is not None,
            item.get_closest_marker("lab") is not None,
        )
    )
