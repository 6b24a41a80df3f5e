"""rotate.py on real lab hosts: dashboard logins and the broker password, with no downtime.

Three hosts of its own, deployed once for the module with the lab's secrets. Every rotation
runs against a copy of .lab/lab.env (FLOWERBED_ENV_FILE), so the lab's own file is never
touched; each test deploys the hosts back to the lab's secrets in a `finally`.

rotate.py counts every host of the inventory that uses the rotated variable, whatever --limit
says: the rotations run with an inventory of the fleet alone (tests/inventories/lab.py with
FLOWERBED_TEST_ONLY_HOSTS), as an operator's inventory of one fleet; the lab's h1..h3 share the
variable names but not this copy of the secrets.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import REPO, Lab, lab_cli
from deploy_helpers import ANSI, PYINFRA, assert_no_secret, data_args, run_deploy
from dotenv import dotenv_values
from polling import until

sys.path.insert(0, str(REPO))
from flowerbed.probe import https_get  # noqa: E402
from flowerbed.resources import DEFAULTS  # noqa: E402

pytestmark = pytest.mark.lab

USERS = "FLOWERBED_DASHBOARD_USERS"
BROKER = "FLOWERBED_BROKER_URL"
CONFIRMED = re.compile(r"\[(\S+)\]\s+login (\S+): accepts the new password")
WORKER = "demo@labmachine"
# nginx's throttle per source (flower_nginx_requests_per_second; the lab keeps the default): this
# machine is one source to each host's nginx, so its clients pace themselves to stay under it
REQUESTS_PER_SECOND = DEFAULTS["flower_nginx_requests_per_second"]
POLLED = ("api/workers", "healthcheck")  # what each polling client asks of every host


@pytest.fixture(scope="module")
def fleet(lab: Lab) -> list[str]:
    names = [f"rt{os.getpid() % 1000}{x}" for x in "abc"]
    for name in names:
        lab_cli("host-up", name)
    lab.state = Lab.load().state
    try:
        deployed = run_deploy(names)
        assert deployed.ok, deployed.explain()
        yield names
    finally:
        for name in names:
            lab_cli("host-down", name)
        lab.state = Lab.load().state


@pytest.fixture
def env_file(lab: Lab, tmp_path: Path, fleet: list[str]) -> Path:
    """A copy of the lab's secrets for rotate.py to write to; the hosts go back to the lab's."""
    copy = tmp_path / "lab.env"
    shutil.copy(lab.state["secrets_file"], copy)
    copy.chmod(0o600)
    yield copy
    restored = run_deploy(fleet)
    assert restored.ok, restored.explain()


FLEET_INVENTORY = "tests/inventories/lab.py"


def rotate_args(names: list[str], data: dict | None = None) -> list[str]:
    limits = [arg for name in names for arg in ("--limit", name)]
    return [PYINFRA, FLEET_INVENTORY, "rotate.py", "-y", *limits, *data_args(data)]


def rotate(
    names: list[str],
    env_file: Path,
    data: dict | None = None,
    env: dict | None = None,
    only: list[str] | None = None,
):
    """rotate.py --limit each of `names`, the inventory holding only `only` (default: `names`)."""
    return run_deploy(
        names,
        data,
        flags=("-y",),
        deploy_file="rotate.py",
        inventory=FLEET_INVENTORY,
        env={
            "FLOWERBED_ENV_FILE": str(env_file),
            "FLOWERBED_TEST_ONLY_HOSTS": json.dumps(only or names),
            **(env or {}),
        },
    )


def logins(value: str) -> dict[str, str]:
    return dict(entry.split(":", 1) for entry in value.split(","))


def status(lab: Lab, name: str, login: tuple[str, str] | None, path: str = "api/workers") -> int:
    fqdn = lab.host(name)["fqdn"]
    return https_get(fqdn, f"/{path}", ca_bundle=lab.state["acme"]["root"], login=login).status


def main_pids(lab: Lab, name: str) -> str:
    return lab.ssh(name, "systemctl show -p MainPID --value flower nginx", check=True).stdout


class Poller:
    """Clients polling every host while a rotation runs: the dashboard's API with the password
    each client holds, and /healthcheck as the monitoring system (no login)."""

    def __init__(self, lab: Lab, names: list[str], user: str, password: str):
        self.lab, self.names, self.user = lab, names, user
        self.password = dict.fromkeys(names, password)
        self.switched: set[str] = set()
        self.results: list[tuple[str, str, str, int, str]] = []  # (host, path, which, status, err)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.poll, args=(name, path), daemon=True)
            for name in names
            for path in POLLED
        ]

    def poll(self, name: str, path: str) -> None:
        fqdn = self.lab.host(name)["fqdn"]
        ca = self.lab.state["acme"]["root"]
        while not self.stop.is_set():
            which = "new" if name in self.switched else "old"
            login = (self.user, self.password[name]) if path != "healthcheck" else None
            answer = https_get(fqdn, f"/{path}", ca_bundle=ca, login=login, timeout=10, patience=1)
            self.results.append((name, path, which, answer.status, answer.error))
            # deliberate pacing: a dashboard polls about once a second, and this machine's
            # clients of one host (one per path) stay under nginx's REQUESTS_PER_SECOND there
            time.sleep(len(POLLED) / (0.8 * REQUESTS_PER_SECOND))

    def answered(self, name: str, path: str, which: str) -> bool:
        """Whether `name` answered `path` with 200 to a client holding the `which` password."""
        return any(r[:4] == (name, path, which, 200) for r in self.results)

    def every_host_answered(self, which: str, paths=POLLED) -> bool:
        return all(self.answered(name, path, which) for name in self.names for path in paths)

    def switch(self, name: str, password: str) -> None:
        self.password[name] = password
        self.switched.add(name)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


@dataclass
class PolledRotation:
    user: str
    old: str
    output: str
    returncode: int
    seconds: float
    poller: Poller


def rotate_while_polling(lab: Lab, names: list[str], env_file: Path) -> PolledRotation:
    """Rotate every login on `names` while a client polls each host with the first login,
    switching a host to the new password when the report says that host accepts it."""
    user, old = next(iter(logins(lab.secrets[USERS]).items()))
    env = {
        **os.environ,
        "PYINFRA_PROGRESS": "off",
        "FLOWERBED_ENV_FILE": str(env_file),
        "FLOWERBED_TEST_ONLY_HOSTS": json.dumps(names),
    }
    log = []
    with Poller(lab, names, user, old) as poller:
        until(lambda: poller.every_host_answered("old"), 30, "answers to every polling client")
        started = time.monotonic()
        run = subprocess.Popen(
            rotate_args(names), cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for line in run.stdout:
            log.append(line)
            confirmed = CONFIRMED.search(ANSI.sub("", line))
            if confirmed:
                poller.switch(confirmed.group(1), logins(dotenv_values(env_file)[USERS])[user])
        run.wait(300)
        seconds = time.monotonic() - started
        if run.returncode == 0 and poller.switched == set(names):
            # every client holds the new password: each host answers it
            until(
                lambda: poller.every_host_answered("new", ["api/workers"]),
                30,
                "answers to the new password from every host",
            )
    return PolledRotation(user, old, "".join(log), run.returncode, seconds, poller)


def test_rotating_every_login_on_three_hosts_has_no_downtime(lab: Lab, fleet, env_file: Path):
    pids = {name: main_pids(lab, name) for name in fleet}
    rotation = rotate_while_polling(lab, fleet, env_file)
    user, old, poller, seconds = rotation.user, rotation.old, rotation.poller, rotation.seconds
    output = rotation.output
    assert rotation.returncode == 0, output
    assert poller.switched == set(fleet), output

    values = dotenv_values(env_file)
    new = logins(values[USERS])[user]
    assert new != old and len(new) >= 32
    assert f"{USERS}_PREVIOUS" not in values, "every host confirmed: the old value is gone"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert_no_secret_in(output, [old, new])

    results = poller.results
    failed = [r for r in results if r[3] == 0 or r[3] >= 500]
    # refused logins (401, or 429 once a source's failed logins are throttled): old password only
    wrong_401 = [r for r in results if r[3] in (401, 429) and r[2] != "old"]
    api = [r for r in results if r[1] == "api/workers"]
    print(
        f"\nrotation of {len(fleet)} hosts: {seconds:.1f} s; {len(results)} requests "
        f"({len(api)} to /api/workers), {len(failed)} failed (5xx/refused/timeout), "
        f"{sum(r[3] in (401, 429) for r in results)} refused with the old password"
    )
    assert not failed, failed[:10]
    assert not wrong_401, "only the old password is ever refused"
    assert all(r[3] == 200 for r in results if r[1] == "healthcheck"), "monitoring never fails"
    for name in fleet:
        assert any(r[0] == name and r[2] == "new" and r[3] == 200 for r in api), name
        assert status(lab, name, (user, old)) == 401
        assert status(lab, name, (user, new)) == 200
        assert main_pids(lab, name) == pids[name], "neither Flower nor nginx was restarted"


def assert_no_secret_in(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, "a password is in rotate.py's output"


def test_a_host_that_cannot_confirm_keeps_the_previous_value_and_a_rerun_finishes(
    lab: Lab, fleet, env_file: Path
):
    user, old = next(iter(logins(lab.secrets[USERS]).items()))
    down = fleet[2]
    lab.ssh(down, "systemctl stop nginx", check=True)
    try:
        first = rotate(fleet, env_file)
        assert not first.ok
        values = dotenv_values(env_file)
        new = logins(values[USERS])[user]
        assert logins(values[f"{USERS}_PREVIOUS"])[user] == old, "the old value is kept"
        assert re.search(rf"{down}: NOT confirmed", first.log), first.log
        assert re.search(rf"{fleet[0]}: confirmed", first.log), first.log
        assert "run rotate.py again to finish" in first.log
        assert_no_secret(first, [old, new])
    finally:
        lab.ssh(down, "systemctl start nginx", check=True)
    again = rotate(fleet, env_file)
    assert again.ok, again.explain()
    values = dotenv_values(env_file)
    assert logins(values[USERS])[user] == new, "a rerun finishes the rotation it found"
    assert f"{USERS}_PREVIOUS" not in values
    for name in fleet:
        assert status(lab, name, (user, new)) == 200
        assert status(lab, name, (user, old)) == 401


def test_rotate_users_and_limit_pick_logins_and_hosts(lab: Lab, fleet, env_file: Path):
    user, password = next(iter(logins(lab.secrets[USERS]).items()))
    two = f"{user}:{password},bob:bobs-Old-pass1"
    env_file.write_text(env_file.read_text().replace(lab.secrets[USERS], two))
    target, other = fleet[0], fleet[1]
    both = run_deploy([target, other], env={"FLOWERBED_ENV_FILE": str(env_file)})
    assert both.ok, both.explain()
    htpasswd = lab.ssh(other, "sha256sum /etc/nginx/flowerbed.htpasswd", check=True).stdout
    result = rotate(
        [target],
        env_file,
        data={"rotate_users": ["bob"]},
        env={"FLOWERBED_NEW_DASHBOARD_USERS": "bob:Given-by-the-operator1"},
        only=[target, other],
    )
    assert result.ok, result.explain()
    values = dotenv_values(env_file)
    assert logins(values[USERS]) == {user: password, "bob": "Given-by-the-operator1"}
    assert logins(values[f"{USERS}_PREVIOUS"]) == {user: password, "bob": "bobs-Old-pass1"}
    assert re.search(rf"{other}: NOT rotated \(outside --limit", result.log), result.log
    assert status(lab, target, ("bob", "Given-by-the-operator1")) == 200
    assert status(lab, target, ("bob", "bobs-Old-pass1")) == 401
    assert status(lab, target, (user, password)) == 200, "the other login is untouched"
    assert status(lab, other, ("bob", "bobs-Old-pass1")) == 200, "--limit: other hosts untouched"
    assert lab.ssh(other, "sha256sum /etc/nginx/flowerbed.htpasswd").stdout == htpasswd


def test_bad_rotation_input_is_refused_before_any_host_changes(lab: Lab, fleet, env_file: Path):
    before = env_file.read_text()
    cases = [
        ({"rotate_users": ["nobody"]}, {}, "rotate_users"),
        ({"rotate": "everything"}, {}, "rotate:"),
        ({"rotate": "broker"}, {}, "FLOWERBED_NEW_BROKER_URL: is unset"),
        ({}, {USERS: "admin:from-the-shell"}, "is set in the environment"),
    ]
    for data, env, message in cases:
        result = rotate(fleet[:1], env_file, data=data, env=env)
        assert not result.ok and message in result.log, result.log
        assert "Starting operation" not in result.log
    assert env_file.read_text() == before


# --- the broker password --------------------------------------------------------------------


def redis_cli(lab: Lab, password: str, *args: str) -> str:
    host, port = lab.state["broker"]["address"].split(":")
    run = subprocess.run(
        ["redis-cli", "-h", host, "-p", port, "--no-auth-warning", "-a", password, *args],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert run.returncode == 0 and "ERR" not in run.stdout, run.stdout + run.stderr
    return run.stdout


def drop_connections_from(lab: Lab, password: str, addresses: list[str]) -> int:
    """Close the broker's connections from `addresses` (their clients must log in again)."""
    clients = redis_cli(lab, password, "CLIENT", "LIST").splitlines()
    ids = [
        fields["id"]
        for fields in (dict(f.split("=", 1) for f in line.split() if "=" in f) for line in clients)
        if fields.get("addr", "").rpartition(":")[0] in addresses
    ]
    for client in ids:
        redis_cli(lab, password, "CLIENT", "KILL", "ID", client)
    return len(ids)


def sees_worker(lab: Lab, name: str, login: tuple[str, str]) -> bool:
    """Flower on this host reaches the broker: the lab worker answers its refresh now."""
    asked = time.time()
    answer = https_get(
        lab.host(name)["fqdn"], "/api/workers?refresh=1", ca_bundle=lab.state["acme"]["root"],
        login=login,
    )  # fmt: skip
    if answer.status != 200:
        return False
    return answer.json().get(WORKER, {}).get("timestamp", 0) >= asked - 1


def surely_blind(samples: list[tuple[float, float, str, bool]], name: str) -> list[tuple]:
    """When a host's Flower surely did not see the worker: in each run of failed samples, from
    the end of the first request to the start of the last. A request under load takes a second
    or more, and the moment it failed is somewhere inside it, so a sample's own span proves
    nothing; a single failed sample proves no stretch at all."""
    stretches, run = [], []
    for sample in sorted(s for s in samples if s[2] == name) + [(0.0, 0.0, name, True)]:
        if not sample[3]:
            run.append(sample)
            continue
        if len(run) > 1 and run[0][1] < run[-1][0]:
            stretches.append((run[0][1], run[-1][0]))
        run = []
    return stretches


def overlapping(windows: list[tuple[tuple[float, float], str]]) -> list:
    """Pairs of two hosts' windows that overlap at all."""
    return [
        (a, b)
        for a in windows
        for b in windows
        if a[1] < b[1] and max(a[0][0], b[0][0]) < min(a[0][1], b[0][1])
    ]


def restarted_at(lab: Lab, name: str) -> tuple[float, float]:
    """When systemd stopped this host's Flower and when it was active again, in seconds of the
    machine's monotonic clock (the lab's hosts are containers: they share it)."""
    shown = lab.ssh(
        name,
        "systemctl show -p ActiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic flower",
        check=True,
    ).stdout
    values = dict(line.split("=", 1) for line in shown.split())
    return (
        int(values["ActiveExitTimestampMonotonic"]) / 1e6,
        int(values["ActiveEnterTimestampMonotonic"]) / 1e6,
    )


def test_broker_password_rolls_host_by_host_through_a_two_password_window(
    lab: Lab, fleet, env_file: Path
):
    old_url = lab.secrets[BROKER]
    old = urlsplit(old_url).password
    new = "rotated-broker-Pass-1"
    new_url = old_url.replace(f":{old}@", f":{new}@")
    login = next(iter(logins(lab.secrets[USERS]).items()))
    pids = {name: main_pids(lab, name).split()[0] for name in fleet}
    redis_cli(lab, old, "ACL", "SETUSER", "default", f">{new}")  # the broker accepts both
    try:
        samples: list[tuple[float, float, str, bool]] = []
        stop = threading.Event()

        def watch(name: str):
            while not stop.is_set():
                began = time.monotonic()
                seen = sees_worker(lab, name, login)
                samples.append((began, time.monotonic(), name, seen))
                # deliberate pacing: one sampler a host, under nginx's REQUESTS_PER_SECOND
                time.sleep(1 / REQUESTS_PER_SECOND)

        watchers = [threading.Thread(target=watch, args=(n,), daemon=True) for n in fleet]
        for watcher in watchers:
            watcher.start()
        try:
            result = rotate(
                fleet,
                env_file,
                data={"rotate": "broker"},
                env={"FLOWERBED_NEW_BROKER_URL": new_url},
            )
        finally:
            stop.set()
            for watcher in watchers:
                watcher.join(30)
        assert result.ok, result.explain()
        assert_no_secret(result, [old, new])
        assert dotenv_values(env_file)[BROKER] == new_url
        assert f"{BROKER}_PREVIOUS" not in dotenv_values(env_file)
        # one host at a time: each Flower stopped only once the one before was started again
        rolled = sorted(restarted_at(lab, name) + (name,) for name in fleet)
        for (_, active_again, before), (stopped, _, after) in itertools.pairwise(rolled):
            assert stopped > active_again, f"{after} stopped before {before} was started again"
        windows = [(w, n) for n in fleet for w in surely_blind(samples, n)]
        together = overlapping(windows)
        assert not together, f"Flower was blind on two hosts at once: {together}"
        assert all(sum(host == n for _, _, host, _ in samples) >= 3 for n in fleet), samples
        restarts = [
            lab.ssh(n, "systemctl show -p MainPID --value flower").stdout.split()[0] for n in fleet
        ]
        assert all(restarts[i] != pids[name] for i, name in enumerate(fleet)), "each host restarted"
        healthy = re.findall(r"\[(\S+)\]\s+Flower is healthy on the new broker URL", result.log)
        assert sorted(healthy) == sorted(fleet), result.log
        # the old password leaves the broker and Flower's connections are dropped: it logs in
        # again, on the new one, and sees the workers again
        redis_cli(lab, new, "ACL", "SETUSER", "default", f"<{old}")
        dropped = drop_connections_from(lab, new, [lab.host(name)["address"] for name in fleet])
        assert dropped >= len(fleet), f"Flower's broker connections: {dropped}"
        until(
            lambda: all(sees_worker(lab, name, login) for name in fleet),
            60,
            "every Flower seeing the worker over a new broker login",
        )
    finally:
        redis_cli(lab, new, "ACL", "SETUSER", "default", f">{old}")
        redis_cli(lab, old, "ACL", "SETUSER", "default", f"<{new}")


def test_a_host_failing_its_health_check_stops_the_broker_roll(lab: Lab, fleet, env_file: Path):
    old_url = lab.secrets[BROKER]
    wrong = old_url.replace(f":{urlsplit(old_url).password}@", ":not-the-broker-password@")
    result = rotate(
        fleet,
        env_file,
        data={"rotate": "broker", "flower_healthcheck_timeout": 15},
        env={"FLOWERBED_NEW_BROKER_URL": wrong},
    )
    assert not result.ok
    assert_no_secret(result, [urlsplit(old_url).password, "not-the-broker-password"])
    failed = re.findall(r"\[(\S+)\]\s+Flower is unhealthy on the new broker URL", result.log)
    assert len(failed) == 1, result.log  # pyinfra picks the order; the first host rolled fails
    first, rest = failed[0], [name for name in fleet if name != failed[0]]
    for name in rest:
        assert re.search(rf"\[{name}\]\s+the roll stopped at {first}", result.log), result.log
        env = lab.ssh(name, "cat /etc/flower/flower.env", check=True).stdout
        assert "not-the-broker-password" not in env, "hosts after the failing one are untouched"
    assert re.search(rf"{first}: NOT confirmed \(the roll stopped here: ", result.log), result.log
    for name in rest:
        assert re.search(
            rf"{name}: NOT confirmed \(not rolled: the roll stopped at {first}", result.log
        )
    assert dotenv_values(env_file)[f"{BROKER}_PREVIOUS"] == old_url, "the old URL is kept"


# --- --limit: every host that uses the variable is a target ---------------------------------


def test_a_limited_rotation_keeps_the_old_value_and_names_the_hosts_not_rotated(
    lab: Lab, fleet, env_file: Path
):
    """The issue's case: `rotate.py --limit h1` in a fleet of three."""
    user, old = next(iter(logins(lab.secrets[USERS]).items()))
    first, rest = fleet[0], fleet[1:]
    limited = rotate([first], env_file, only=fleet)
    assert limited.ok, limited.explain()  # what was asked (the canary) worked
    values = dotenv_values(env_file)
    new = logins(values[USERS])[user]
    assert logins(values[f"{USERS}_PREVIOUS"])[user] == old, ".env keeps what the others accept"
    assert re.search(rf"{first}: confirmed", limited.log), limited.log
    for name in rest:
        assert re.search(rf"{name}: NOT rotated \(outside --limit", limited.log), limited.log
        assert status(lab, name, (user, old)) == 200, f"{name} still takes the old password"
        assert status(lab, name, (user, new)) == 401
    assert "Rotation pending" in limited.log and "Every host confirmed" not in limited.log
    assert status(lab, first, (user, new)) == 200 and status(lab, first, (user, old)) == 401
    assert_no_secret(limited, [old, new])

    htpasswd = lab.ssh(first, "sha256sum /etc/nginx/flowerbed.htpasswd", check=True).stdout
    finished = rotate(fleet, env_file)  # the same fleet, no --limit beyond it
    assert finished.ok, finished.explain()
    assert "Every host confirmed" in finished.log, finished.log
    values = dotenv_values(env_file)
    assert logins(values[USERS])[user] == new, "the pending rotation was finished, not redone"
    assert f"{USERS}_PREVIOUS" not in values
    for name in fleet:
        assert status(lab, name, (user, new)) == 200 and status(lab, name, (user, old)) == 401
    assert lab.ssh(first, "sha256sum /etc/nginx/flowerbed.htpasswd").stdout == htpasswd


def test_a_second_rotation_of_a_locked_env_file_is_refused(lab: Lab, fleet, env_file: Path):
    before = env_file.read_text()
    fd = os.open(f"{env_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a first rotate.py holds it for its whole run
    try:
        result = rotate(fleet[:1], env_file, only=fleet[:1])
    finally:
        os.close(fd)
    assert not result.ok and "locked by another process" in result.log, result.log
    assert "Starting operation" not in result.log
    assert env_file.read_text() == before
