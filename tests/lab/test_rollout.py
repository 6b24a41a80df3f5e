"""Changes that roll (issue 23): `python -m flowerbed.rollout` on six fresh hosts.

The module boots six hosts once and converges them on Flower 2.1.0. Then:
(a) the upgrade to 2.2.0 rolls out canary first, then in batches of three, while a client polls
    every dashboard through nginx (HTTPS, the lab's login and CA): no request fails, not even on
    a host while its Flower restarts (systemd keeps Flower's socket: flowerbed/socket_keeper.py);
    each host restarts inside its own batch's window; every task Flower knew before is still
    known after;
(b) an app Flower cannot import stops the rollout at the canary: the canary keeps serving with
    the Flower it ran, the five others are byte for byte as they were (unit, Flower's options,
    nginx's site, the venv link, Flower's PID), and the report names them as left alone;
(c) a broken nginx snippet does the same (`nginx -t` refuses it on the canary).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from conftest import REPO, Lab
from deploy_helpers import deploy_env, run_deploy
from lab_worker import flower_api

pytestmark = pytest.mark.lab

INVENTORY = "tests/inventories/lab.py"  # with FLOWERBED_TEST_ONLY_HOSTS: the module's hosts only
PYTHON = str(REPO / ".venv" / "bin" / "python")
OLD, NEW = "2.1.0", "2.2.0"
BATCH = 3
# what a host that was left alone must still hold, byte for byte: Flower's unit, its options and
# environment files, nginx's sites
WATCHED = "/etc/systemd/system/flower.service /etc/flower/* /etc/nginx/conf.d/flowerbed*"
PROGRESS = re.compile(r"^rollout: (?:the canary|batch \d+ of \d+): (.+)$")


# --- running a rollout while a client polls every dashboard ---------------------------------


@dataclass
class Poll:
    started: float
    ended: float
    status: dict[str, int]  # host -> HTTP status (0: no answer)


@dataclass
class Rollout:
    returncode: int
    report: str  # stdout: the report alone
    log: str  # stderr: progress and pyinfra's logs
    windows: list[tuple[list[str], float, float]] = field(default_factory=list)  # batch, from, to
    polls: list[Poll] = field(default_factory=list)

    def section(self, heading: str) -> list[str]:
        """The hosts the report lists under `heading` ("changed", "left alone", ...)."""
        line = re.search(rf"^  {heading} \(\d+\): (.*?)(?: \(.*\))?$", self.report, re.M)
        assert line, self.report
        return [] if line.group(1) == "-" else line.group(1).split(", ")

    def window(self, host: str) -> tuple[float, float]:
        return next((start, end) for batch, start, end in self.windows if host in batch)


class Poller(threading.Thread):
    """GET / on every host through nginx, all at once (one curl), round after round."""

    def __init__(self, lab: Lab, names: list[str]):
        super().__init__(daemon=True)
        self.lab, self.names, self.polls, self.done = lab, names, [], threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.time()
            status = dashboards(self.lab, self.names)
            self.polls.append(Poll(started, time.time(), status))
            time.sleep(0.2)


def dashboards(lab: Lab, names: list[str]) -> dict[str, int]:
    """Each host's status for GET https://<fqdn>/ with the lab's login and CA (0: no answer);
    the login goes to curl on stdin."""
    user, password = lab.dashboard_login
    argv = [
        "curl",
        "-K",
        "-",
        "-s",
        "-m",
        "30",
        "--parallel",
        "--cacert",
        lab.state["acme"]["root"],
    ]
    argv += ["-w", "%{url_effective} %{http_code}\\n"]
    for name in names:
        host = lab.host(name)
        argv += ["--resolve", f"{host['fqdn']}:443:{host['address']}"]
        argv += ["-o", "/dev/null", f"https://{host['fqdn']}/"]
    done = subprocess.run(
        argv, input=f'user = "{user}:{password}"\n', capture_output=True, text=True, timeout=60
    )
    by_fqdn = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines() if " " in line)
    return {n: int(by_fqdn.get(f"https://{lab.host(n)['fqdn']}/", 0)) for n in names}


def roll(lab: Lab, names: list[str], *options: str, poll: bool = False) -> Rollout:
    """`python -m flowerbed.rollout` over the module's hosts; each batch's window timed from
    its progress line to the next."""
    argv = [PYTHON, "-m", "flowerbed.rollout", INVENTORY, "deploy.py", *options]
    env = deploy_env({"FLOWERBED_TEST_ONLY_HOSTS": json.dumps(names)})
    poller = Poller(lab, names)
    if poll:
        poller.start()
    began = time.time()
    with tempfile.TemporaryFile("w+") as report:
        run = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=report, stderr=subprocess.PIPE, text=True
        )
        log, starts = [], []
        for line in run.stderr:
            log.append(line)
            if found := PROGRESS.match(line.rstrip("\n")):
                starts.append((found.group(1).split(", "), time.time()))
        run.wait(timeout=1200)
        ended = time.time()
        report.seek(0)
        result = Rollout(run.returncode, report.read(), "".join(log))
    poller.done.set()
    if poll:
        poller.join(30)
    ends = [start for _, start in starts[1:]] + [ended]
    result.windows = [(batch, start, end) for (batch, start), end in zip(starts, ends, strict=True)]
    result.polls = poller.polls
    print(f"rollout {' '.join(options)}: exit {run.returncode} in {ended - began:.1f} s")
    for batch, start, end in result.windows:
        print(f"  {', '.join(batch)}: {end - start:.1f} s")
    print(result.report)
    return result


# --- what a host holds ----------------------------------------------------------------------


def sh(lab: Lab, name: str, command: str) -> str:
    return lab.ssh(name, command, check=True).stdout.strip()


def fingerprint(lab: Lab, name: str) -> dict[str, str]:
    """The watched files' sha256, the venv link's target and Flower's PID."""
    sums = sh(lab, name, f"sha256sum {WATCHED}")
    found = {path: digest for digest, path in (line.split() for line in sums.splitlines())}
    found["venv"] = sh(lab, name, "readlink /opt/flower/venv")
    found["pid"] = sh(lab, name, "systemctl show flower --property=MainPID --value")
    return found


def flower_version(lab: Lab, name: str) -> str:
    return sh(
        lab, name, "/opt/flower/venv/bin/python -c 'import flower; print(flower.__version__)'"
    )


def flower_started(lab: Lab, name: str) -> float:
    """When Flower's running process started (the host's clock is this machine's)."""
    show = "systemctl show flower --property=ExecMainStartTimestamp --value --timestamp=us+utc"
    started = datetime.strptime(sh(lab, name, show), "%a %Y-%m-%d %H:%M:%S.%f %Z")
    return started.replace(tzinfo=UTC).timestamp()


def known_tasks(lab: Lab, name: str) -> set[str]:
    return set(flower_api(lab, name, "/api/tasks"))


def tasks_everywhere(lab: Lab, names: list[str]) -> dict[str, set[str]] | None:
    """Each host's known tasks, once every host knows one (the lab's producer sends them)."""
    known = {name: known_tasks(lab, name) for name in names}
    return known if all(known.values()) else None


def wait_until(check, timeout: float, what: str, every: float = 1):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s: {what}"
        time.sleep(every)
    return value


# --- the module's six hosts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(lab: Lab, module_hosts) -> list[str]:
    """Six fresh hosts, converged on Flower 2.1.0, in the order the inventory lists them."""
    names = [module_hosts(prefix="roll")["name"] for _ in range(6)]
    started = time.monotonic()
    first = run_deploy(names, {"flower_version": OLD}, timeout=1500)
    assert first.ok and first.totals["error"] == 0, first.explain()
    print(f"six hosts converged on Flower {OLD}: {time.monotonic() - started:.1f} s")
    listed = subprocess.run(
        [PYTHON, "-m", "pyinfra", INVENTORY, "debug-inventory", "--json"], cwd=REPO,
        env=deploy_env({"FLOWERBED_TEST_ONLY_HOSTS": json.dumps(names)}),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [entry["name"] for entry in json.loads(listed.stdout)]


def test_an_upgrade_rolls_out_batch_by_batch_keeping_state_and_every_other_dashboard(
    lab: Lab, fleet: list[str]
):
    canary = fleet[3]  # not the first: the knob chooses it
    assert {flower_version(lab, name) for name in fleet} == {OLD}
    before = wait_until(lambda: tasks_everywhere(lab, fleet), 60, "every Flower knows tasks")
    done = roll(
        lab, fleet, "--data", f"flower_version={NEW}", "--data", f"flower_rollout_batch={BATCH}",
        "--data", f"flower_rollout_canary={canary}", poll=True,
    )  # fmt: skip
    assert done.returncode == 0, done.log[-6000:]
    assert done.report.startswith("rollout done: 3 batch(es)"), done.report
    assert sorted(done.section("changed")) == sorted(fleet) and not done.section("left alone")
    others = [name for name in fleet if name != canary]
    assert [batch for batch, _, _ in done.windows] == [[canary], others[:3], others[3:]]
    # each host restarted inside its own batch's window, and runs the new Flower
    for name in fleet:
        start, end = done.window(name)
        assert start - 1 <= flower_started(lab, name) <= end + 1, name
        assert flower_version(lab, name) == NEW
    # each host's new Flower took the socket systemd kept (flowerbed/socket_keeper.py)
    kept = "journalctl -u flower --no-pager -o cat | grep -c 'serving on the socket systemd kept'"
    for name in fleet:
        assert int(sh(lab, name, kept)) >= 1, f"{name}: its new Flower bound a new socket"
    # Flower's state: every task known before is known after
    for name in fleet:
        lost = before[name] - known_tasks(lab, name)
        assert not lost, f"{name} lost {len(lost)} of {len(before[name])} tasks"
    # the client: not one request failed, on any host, while each restarted
    assert len(done.polls) > 20, "the client polled throughout"
    started = {name: flower_started(lab, name) for name in fleet}
    during = [p for p in done.polls if any(p.started <= t <= p.ended for t in started.values())]
    assert during, "no poll overlapped a Flower's restart: the test proves nothing"
    failed = [(poll, name) for poll in done.polls for name, s in poll.status.items() if s != 200]
    assert not failed, failed[:10]
    slowest = max(poll.ended - poll.started for poll in done.polls)
    print(
        f"{len(done.polls)} polls of {len(fleet)} dashboards, {len(during)} of them across a "
        f"Flower's restart: 0 failed; the slowest round took {slowest:.1f} s"
    )


def test_an_app_flower_cannot_import_stops_at_the_canary_and_leaves_the_others_alone(
    lab: Lab, fleet: list[str]
):
    before = {name: fingerprint(lab, name) for name in fleet}
    canary, others = fleet[0], fleet[1:]
    app = ["--data", "flower_app=flowerbed_demo.no_such_app:app"]
    done = roll(lab, fleet, *app, "--data", "flower_app_source=lab/demo_app")
    assert done.returncode == 1, done.log[-6000:]
    assert done.report.startswith("rollout STOPPED at the canary"), done.report
    assert done.section("failed") == [canary]
    assert done.section("left alone") == others
    assert "cannot be loaded: ModuleNotFoundError flowerbed_demo.no_such_app" in done.log
    assert [batch for batch, _, _ in done.windows] == [[canary]]
    # the canary keeps the Flower it ran, and serves; the others are as they were
    assert fingerprint(lab, canary)["pid"] == before[canary]["pid"]
    assert dashboards(lab, fleet) == {name: 200 for name in fleet}
    assert {name: fingerprint(lab, name) for name in others} == {n: before[n] for n in others}


def test_a_broken_nginx_snippet_stops_at_the_canary_which_keeps_serving(lab: Lab, fleet: list[str]):
    canary = fleet[1]
    before = {name: fingerprint(lab, name) for name in fleet}
    broken = ['flower_nginx_server_snippets=["flowerbed_broken_snippet on;"]',
              "flower_nginx_server_snippets_unchecked=true"]  # fmt: skip
    done = roll(
        lab, fleet, "--data", broken[0], "--data", broken[1],
        "--data", f"flower_rollout_canary={canary}",
    )  # fmt: skip
    assert done.returncode == 1, done.log[-6000:]
    assert done.section("failed") == [canary]
    assert done.section("left alone") == [name for name in fleet if name != canary]
    assert 'unknown directive "flowerbed_broken_snippet"' in done.log
    assert dashboards(lab, fleet) == {name: 200 for name in fleet}
    assert {name: fingerprint(lab, name) for name in fleet} == before
