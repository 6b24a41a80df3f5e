"""Faults on the lab (issue 12): each test injects one, watches, recovers, and checks what the
user sees (HTTP through nginx with a login, /api/workers, systemd, the nft table, the journal)
and that nothing was lost.

The module shares two fresh hosts of its own, pointed at a broker of its own: a second
redis-server on the bridge with its own demo worker and producer, so the broker outage and
everything else here leave the lab's shared broker, worker and hosts untouched. Waits poll a
condition against a deadline; the only timed waits are the outage itself.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import LAB_CLI, REPO, Lab
from deploy_helpers import DeployResult, deploy_args, deploy_env, run_deploy
from lab_worker import flower_api
from labkit.celery_lab import broker_password, redis_answers

from flowerbed.render import TEMPLATES

pytestmark = pytest.mark.lab

BROKER_PORT = 6390  # the lab's own Redis is on 6379
WORKER = "faults@labmachine"
BROKER_ENV = "FLOWERBED_FAULT_BROKER_URL"
SAVE_INTERVAL_MS = 2000
FAULT_DATA = {
    "flower_broker_url_env": BROKER_ENV,
    "flower_state_save_interval": SAVE_INTERVAL_MS,  # fault 7 measures the loss against it
    "flower_restart_sec": 1,
}
HOST_DATA_INVENTORY = "tests/inventories/lab.py"
WITH_TEMPLATES = "tests/deploys/with_templates.py"
UNREACHABLE = {"ghost": "10.77.0.9"}  # on the bridge, below every lab host: nothing answers
VENVS = "/opt/flower/venvs"
VENV_LINK = "/opt/flower/venv"
UNIT = "/etc/systemd/system/flower.service"
STATE_DIR = "/var/lib/flower"
NEWEST_STATE = f"$(ls -t {STATE_DIR}/flower* | grep -v tmp | head -n 1)"  # dbm names vary
FIREWALL_STATE = "/var/lib/flowerbed/firewall"
BOOT_RULESET = "/etc/flowerbed/firewall.nft"
PIP_RUNNING = f"pgrep -f '^{VENVS}/[0-9a-f]+/bin/python -m pip' >/dev/null"
OUTAGE_FROZEN_S = 30  # the broker frozen (SIGSTOP) ...
OUTAGE_DOWN_S = 30  # ... then down (killed), Flower restarted meanwhile: a minute in all


# --- a broker of the module's own -----------------------------------------------------------


class Broker:
    """redis-server on the bridge with a worker and a producer of the lab's demo app."""

    def __init__(self, lab: Lab, workdir: Path):
        self.address = lab.state["bridge"]["address"]
        self.url = f"redis://:{secrets.token_urlsafe(24)}@{self.address}:{BROKER_PORT}/0"
        self.conf = workdir / "redis.conf"
        self.conf.touch(mode=0o600)
        self.password = broker_password(self.url)
        self.conf.write_text(
            f"bind {self.address}\nport {BROKER_PORT}\nrequirepass {self.password}\n"
            f'dir {workdir}\nsave ""\nappendonly no\n'
        )
        self.logs = workdir
        self.redis: subprocess.Popen | None = None
        self.helpers: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        assert not self.listening(), f"something already listens on {BROKER_PORT}"
        self.redis = self.spawn("redis", ["redis-server", str(self.conf)])
        wait_until(self.answers, 10, "the module's redis answers PING")
        self.start_helpers()

    def start_helpers(self) -> None:
        env = {"CELERY_BROKER_URL": self.url, "PYTHONPATH": str(REPO / "lab" / "demo_app")}
        env |= {"FLOWERBED_PRODUCER_INTERVAL": "0.5", "FLOWERBED_PRODUCER_HOURS": "1"}
        celery, python = str(REPO / ".venv/bin/celery"), str(REPO / ".venv/bin/python")
        for name, argv in (
            ("worker", [celery, "-A", "flowerbed_demo.app", "worker", "-E", "--concurrency=1",
                        f"--hostname={WORKER}", "--loglevel=INFO"]),
            ("producer", [python, "-m", "flowerbed_demo.producer"]),
        ):  # fmt: skip
            if name not in self.helpers or self.helpers[name].poll() is not None:
                self.helpers[name] = self.spawn(name, argv, env)

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("a")
        return subprocess.Popen(argv, stdout=log, stderr=log, env=deploy_env(env), cwd=REPO)

    def listening(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.address, BROKER_PORT)) == 0

    def answers(self) -> bool:
        return redis_answers(self.password, self.address, BROKER_PORT)

    def freeze(self) -> None:
        self.redis.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        self.redis.kill()  # a frozen process dies too
        self.redis.wait(10)

    def restore(self) -> list[str]:
        """Redis running again (thawed, or started anew); the helpers that had died."""
        if self.redis and self.redis.poll() is None:
            self.redis.send_signal(signal.SIGCONT)
        else:
            self.redis = self.spawn("redis", ["redis-server", str(self.conf)])
            wait_until(self.answers, 10, "the module's redis answers PING again")
        died = [name for name, process in self.helpers.items() if process.poll() is not None]
        self.start_helpers()
        return died

    def stop(self) -> None:
        for process in (*self.helpers.values(), self.redis):
            if process and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="module")
def broker(lab: Lab, tmp_path_factory):
    own = Broker(lab, tmp_path_factory.mktemp("fault-broker"))
    try:
        own.start()
        yield own
    finally:
        own.stop()


# --- small helpers --------------------------------------------------------------------------


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s: {what}"
        time.sleep(every)
    return value


def deploy(broker: Broker, names: list[str], data: dict | None = None, **kwargs) -> DeployResult:
    env = {BROKER_ENV: broker.url, **kwargs.pop("env", {})}
    return run_deploy(names, {**FAULT_DATA, **(data or {})}, env=env, **kwargs)


def converged(result: DeployResult) -> DeployResult:
    assert result.ok and result.totals["error"] == 0, result.explain()
    return result


def sh(lab: Lab, name: str, command: str | list[str], check: bool = True) -> str:
    return lab.ssh(name, command, check=check).stdout.strip()


def unit(lab: Lab, name: str, service: str = "flower") -> dict[str, str]:
    props = ["ActiveState", "SubState", "Result", "MainPID", "NRestarts", "NeedDaemonReload"]
    shown = sh(lab, name, ["systemctl", "show", service, *(f"--property={p}" for p in props)])
    return dict(line.split("=", 1) for line in shown.splitlines())


def dashboard(lab: Lab, name: str, path: str = "/api/workers", timeout: int = 10):
    """(status, body) of a GET through nginx from lab-allowed, with the lab's login; status 0
    when no answer came."""
    user, password = lab.dashboard_login
    url = f"https://{lab.host(name)['fqdn']}{path}"
    argv = ["curl", "-sS", "-m", str(timeout), "--cacert", lab.state["acme"]["root"]]
    argv += ["-u", f"{user}:{password}", "-w", "\n%{http_code}", url]
    done = lab.in_namespace("lab-allowed", argv, timeout=timeout + 10)
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body


def online_workers(lab: Lab, name: str) -> list[str]:
    status, body = dashboard(lab, name, "/api/workers?status=true")
    return sorted(w for w, up in json.loads(body).items() if up) if status == 200 else []


def tasks(lab: Lab, name: str) -> dict[str, float]:
    """Every task Flower knows on the host: uuid -> when it first heard of it (its socket)."""
    known = flower_api(lab, name, "/api/tasks")
    return {
        uuid: min(t for t in (task.get("sent"), task.get("received"), task["timestamp"]) if t)
        for uuid, task in known.items()
    }


def serves_the_worker(lab: Lab, name: str) -> bool:
    return WORKER in online_workers(lab, name)


def tcp_state(lab: Lab, name: str, port: int) -> str:
    with socket.socket() as sock:
        sock.settimeout(3)
        try:
            sock.connect((lab.host(name)["address"], port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "filtered"


def venvs(lab: Lab, name: str) -> dict[str, bool]:
    """The venv directories on a host: key -> complete (marker present)."""
    each = (
        '[ -d "$d" ] || continue; test -f $d.flowerbed-complete && echo ${d%/}=1 || echo ${d%/}=0'
    )
    listing = sh(lab, name, f"cd {VENVS} 2>/dev/null && for d in */; do {each}; done", False)
    return {k: v == "1" for k, _, v in (line.partition("=") for line in listing.split())}


def link_target(lab: Lab, name: str) -> str:
    return sh(lab, name, ["readlink", VENV_LINK], check=False)


def sha(lab: Lab, name: str, path: str) -> str:
    return sh(lab, name, ["sha256sum", path]).split()[0]


def nft_table(lab: Lab, name: str) -> str:
    return sh(lab, name, ["nft", "-s", "list", "table", "inet", "flowerbed"])


# --- SIGKILL of pyinfra at a point on the host ----------------------------------------------


@dataclass
class Killed:
    seconds: float  # from the start of the run to the kill
    log: str


def deploy_killed_when(
    lab: Lab, broker: Broker, names: list[str], watched: str, condition: str,
    data: dict | None = None, timeout: float = 300,
) -> Killed:  # fmt: skip
    """Start the deploy; SIGKILL pyinfra the moment `condition` (a shell test, polled every
    50 ms on the host `watched`) holds. Fails if the run ends before that point."""
    args = deploy_args(names, {**FAULT_DATA, **(data or {})}, flags=("-y",))
    out = Path(f"/tmp/fault-deploy-{time.monotonic_ns()}.log")
    started = time.monotonic()
    with out.open("w") as sink:
        run = subprocess.Popen(
            args, cwd=REPO, stdout=sink, stderr=sink, env=deploy_env({BROKER_ENV: broker.url})
        )
        loop = f"for i in $(seq {int(timeout * 20)}); do if {condition}; then exit 0; fi; sleep 0.05; done; exit 1"  # noqa: E501
        watcher = subprocess.Popen([*LAB_CLI, "ssh", watched, loop], stdout=subprocess.DEVNULL)
        try:
            while watcher.poll() is None:
                assert run.poll() is None, f"the run ended before `{condition}`:\n{out.read_text()}"
                time.sleep(0.02)
            assert watcher.returncode == 0, f"`{condition}` never held:\n{out.read_text()}"
            run.send_signal(signal.SIGKILL)
            seconds = time.monotonic() - started
        finally:
            for process in (run, watcher):
                if process.poll() is None:
                    process.kill()
                process.wait()
    text = out.read_text()
    out.unlink()
    assert run.returncode == -signal.SIGKILL, text
    return Killed(seconds, text)


def no_pip_left(lab: Lab, name: str) -> None:
    """A killed run's pip may finish on its own: wait it out, so what follows is deterministic."""
    wait_until(lambda: lab.ssh(name, PIP_RUNNING).returncode == 1, 300, f"pip ends on {name}")


# --- the module's hosts: a first deploy with three faults in it -----------------------------


@dataclass
class FirstDeploy:
    names: list[str]  # [a, b]
    killed: Killed  # run 1: killed while pip built the venvs
    after_kill: dict  # what the hosts held then
    retried: DeployResult  # run 2: b's ACME CA unreachable, one more host unreachable
    b_ports: dict[int, str]
    b_http: int


@pytest.fixture(scope="module")
def first(lab: Lab, broker: Broker, module_hosts) -> FirstDeploy:
    """Two fresh hosts and their first deploy: (1) killed while pip builds the venvs, (2) run
    again with b's ACME directory unreachable and a third host unreachable, (3) b converged."""
    a, b = (module_hosts(prefix="fault")["name"] for _ in range(2))
    killed = deploy_killed_when(lab, broker, [a, b], a, PIP_RUNNING)
    print(f"first deploy killed while pip ran on {a}: {killed.seconds:.1f} s into the run")
    for name in (a, b):
        no_pip_left(lab, name)
    after_kill = {name: {"venvs": venvs(lab, name), "link": link_target(lab, name),
                         "flower": unit(lab, name)["ActiveState"]} for name in (a, b)}  # fmt: skip
    broken_acme = {b: {"flower_tls_acme_directory": "https://10.77.0.1:14001/dir"}}
    retried = deploy(
        broker,
        [a, b, *UNREACHABLE],
        inventory=HOST_DATA_INVENTORY,
        env={
            "FLOWERBED_TEST_HOST_DATA": json.dumps(broken_acme),
            "FLOWERBED_TEST_UNREACHABLE": json.dumps(UNREACHABLE),
        },
    )
    print(
        f"first deploy retried ({a} ok, {b} ACME down, ghost unreachable): {retried.seconds:.1f} s"
    )
    b_ports = {port: tcp_state(lab, b, port) for port in (80, 443)}
    b_http = int(sh(lab, b, "curl -s -o /dev/null -w '%{http_code}' http://localhost/"))
    done = converged(deploy(broker, [b]))
    print(f"{b} converged with its ACME CA back: {done.seconds:.1f} s")
    return FirstDeploy([a, b], killed, after_kill, retried, b_ports, b_http)


@pytest.fixture
def hosts(lab: Lab, first: FirstDeploy) -> list[str]:
    """The module's two hosts, each serving the module's worker through nginx."""
    for name in first.names:
        wait_until(lambda n=name: serves_the_worker(lab, n), 60, f"{name} shows {WORKER}")
    return first.names


# --- 3 (and issue 13): killed during the venv build ------------------------------------------


def test_an_interrupted_venv_build_is_never_linked_and_the_next_run_retries_it(
    lab: Lab, first: FirstDeploy
):
    a, b = first.names
    for name in (a, b):
        held = first.after_kill[name]
        assert held["venvs"] and not any(held["venvs"].values()), held  # half-built, unmarked
        assert held["link"] == "", f"{name}: a half-built venv is linked: {held['link']}"
        assert held["flower"] != "active", held
    # the next run rebuilt it and linked the complete venv
    assert sorted(first.retried.changed_hosts("venv from its hash-pinned lock")) == sorted([a, b])
    for name in (a, b):
        built = venvs(lab, name)
        assert list(built.values()) == [True], built
        assert link_target(lab, name) == f"{VENVS}/{next(iter(built))}"


def test_a_deploy_killed_while_building_a_new_venv_keeps_serving_the_old_one(
    lab: Lab, broker: Broker, hosts: list[str]
):
    a = hosts[0]
    linked, pid = link_target(lab, a), unit(lab, a)["MainPID"]
    killed = deploy_killed_when(lab, broker, [a], a, PIP_RUNNING, {"flower_version": "2.1.0"})
    print(f"upgrade killed while pip ran: {killed.seconds:.1f} s into the run")
    no_pip_left(lab, a)
    half = [key for key, complete in venvs(lab, a).items() if not complete]
    assert half, "the killed run left no half-built venv to look at"
    assert link_target(lab, a) == linked, "the link moved to a half-built venv"
    assert unit(lab, a)["MainPID"] == pid and serves_the_worker(lab, a)
    again = converged(deploy(broker, [a]))
    assert again.changed_hosts("Restart Flower") == [], "the old venv never stopped serving"
    assert list(venvs(lab, a)) == [linked.rsplit("/", 1)[1]], "the half-built venv is removed"
    assert converged(deploy(broker, [a])).totals["success"] == 0


# --- 3: killed between the unit and the restart, and during the firewall switch --------------


def test_a_deploy_killed_between_the_unit_and_the_restart_restarts_on_the_next_run(
    lab: Lab, broker: Broker, hosts: list[str]
):
    a = hosts[0]
    pid = unit(lab, a)["MainPID"]
    new = {"flower_restart_sec": 2}
    killed = deploy_killed_when(lab, broker, [a], a, f"grep -qx RestartSec=2 {UNIT}", new)
    held = unit(lab, a)
    restarted = held["MainPID"] != pid
    print(f"killed {killed.seconds:.1f} s into the run, once the new unit was written; "
          f"Flower {'had' if restarted else 'had not'} been restarted")  # fmt: skip
    assert held["ActiveState"] == "active" and serves_the_worker(lab, a)
    try:
        converged(deploy(broker, [a], new))
        shown = sh(lab, a, ["systemctl", "show", "flower", "-p", "RestartUSec"])
        assert shown == "RestartUSec=2s", "systemd runs the old unit"
        assert unit(lab, a)["NeedDaemonReload"] == "no"
        assert unit(lab, a)["MainPID"] != pid, "Flower never restarted with its new unit"
        assert converged(deploy(broker, [a], new)).totals["success"] == 0
    finally:
        converged(deploy(broker, [a]))
    wait_until(lambda: serves_the_worker(lab, a), 60, f"{a} shows {WORKER} after its restart")


def test_a_deploy_killed_during_the_firewall_switch_never_locks_the_admin_out(
    lab: Lab, broker: Broker, hosts: list[str]
):
    a = hosts[0]
    before = nft_table(lab, a)
    sh(lab, a, f"echo '# drifted' >> {BOOT_RULESET}")  # the next run applies and confirms again
    killed = deploy_killed_when(lab, broker, [a], a, f"test -s {FIREWALL_STATE}/applied")
    print(f"killed {killed.seconds:.1f} s into the run, with a ruleset waiting for its confirm")
    armed = sh(lab, a, ["systemctl", "is-active", "flowerbed-firewall-rollback.timer"], False)
    assert armed == "active", "the switch armed its rollback timer"
    assert lab.ssh(a, ["true"]).returncode == 0, "a new SSH login for the admin"
    assert dashboard(lab, a)[0] == 200
    converged(deploy(broker, [a]))
    disarmed = sh(lab, a, ["systemctl", "is-active", "flowerbed-firewall-rollback.timer"], False)
    assert disarmed != "active", "a confirmed ruleset would still be rolled back"
    assert sh(lab, a, ["ls", "-A", FIREWALL_STATE]) == "lock", "nothing waits for a confirm"
    assert nft_table(lab, a) == before
    assert lab.ssh(a, ["true"]).returncode == 0 and dashboard(lab, a)[0] == 200


# --- 4 and 5: an unreachable ACME CA and an unreachable host on a first deploy ---------------


def test_acme_ca_unreachable_on_a_first_deploy_leaves_that_host_on_port_80(
    lab: Lab, first: FirstDeploy
):
    a, b = first.names
    result = first.retried
    assert not result.ok and b in result.failed_hosts, result.explain()
    assert a not in result.failed_hosts
    failed = result.failed_operations(b)
    assert failed and "TLS certificate" in failed[0], f"{b} failed first at {failed}"
    assert "10.77.0.1:14001" in result.log, "the error names the ACME directory it could not reach"
    assert first.b_ports == {80: "open", 443: "refused"}, first.b_ports
    assert first.b_http == 301, "port 80 redirects (and answers ACME challenges)"
    assert dashboard(lab, a)[0] == 200


def test_an_unreachable_host_is_named_and_the_others_converge(lab: Lab, first: FirstDeploy):
    result = first.retried
    assert sorted(result.failed_hosts) == sorted([first.names[1], *UNREACHABLE])
    assert any(f"[{ghost}]" in line for ghost in UNREACHABLE for line in result.log.splitlines())
    assert first.names[0] not in result.failed_hosts


# --- 1: the broker frozen, then down, with Flower starting meanwhile -------------------------


def test_broker_outage_flower_recovers_by_itself(lab: Lab, broker: Broker, hosts: list[str]):
    a, b = hosts
    before = {name: unit(lab, name) for name in hosts}
    known = tasks(lab, a)
    seen: dict[str, set] = {name: set() for name in hosts}

    def watch(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name in hosts:
                state = unit(lab, name)
                seen[name].add(state["ActiveState"])
                status = dashboard(lab, name, "/healthcheck", timeout=5)[0]
                seen[name].add(f"healthcheck {status}")

    broker.freeze()
    try:
        watch(OUTAGE_FROZEN_S)
        broker.kill()
        sh(lab, b, "systemctl restart flower")  # Flower starting while the broker is down
        started_pid = unit(lab, b)["MainPID"]
        watch(OUTAGE_DOWN_S)
    finally:
        died = broker.restore()
    outage_over = time.monotonic()
    print(f"during the outage: {seen}; helpers that died: {died}")
    for name in hosts:
        wait_until(lambda n=name: serves_the_worker(lab, n), 120, f"{WORKER} is back on {name}")
    print(f"workers back on both hosts {time.monotonic() - outage_over:.1f} s after the outage")
    after = {name: unit(lab, name) for name in hosts}
    for name in hosts:
        assert "failed" not in seen[name] and after[name]["ActiveState"] == "active", seen
        assert after[name]["NRestarts"] == before[name]["NRestarts"], "systemd restarted Flower"
    assert after[a]["MainPID"] == before[a]["MainPID"], "Flower on a was replaced"
    assert after[b]["MainPID"] == started_pid
    assert set(known) <= set(tasks(lab, a)), "tasks known before the outage were lost"
    wait_until(lambda: len(set(tasks(lab, a)) - set(known)) > 0, 60, "new tasks arrive")


# --- 2: a reboot ----------------------------------------------------------------------------


def test_after_a_reboot_everything_comes_back_firewall_first(lab: Lab, hosts: list[str]):
    a = hosts[0]
    boot = sh(lab, a, ["cat", "/proc/sys/kernel/random/boot_id"])
    known = tasks(lab, a)
    lab.ssh(a, ["systemctl", "reboot"])

    def booted_again() -> bool:
        now = lab.ssh(a, ["cat", "/proc/sys/kernel/random/boot_id"], timeout=15)
        return now.returncode == 0 and now.stdout.strip() != boot

    wait_until(booted_again, 120, f"{a} boots again")
    wait_until(lambda: serves_the_worker(lab, a), 90, f"{a} serves the worker after its reboot")
    for service in ("flower", "nginx", "flowerbed-firewall"):
        assert sh(lab, a, ["systemctl", "is-enabled", service]) == "enabled", service
        assert unit(lab, a, service)["ActiveState"] == "active", service
    digest = sh(lab, a, ["grep", "-o", "flowerbed sha256:[0-9a-f]*", BOOT_RULESET])
    assert digest and digest in nft_table(lab, a), "the boot ruleset is the live table"
    stamp = ["systemctl", "show", "--value"]
    loaded = int(sh(lab, a, [*stamp, "-p", "ActiveEnterTimestampMonotonic", "flowerbed-firewall"]))
    nginx = int(sh(lab, a, [*stamp, "-p", "InactiveExitTimestampMonotonic", "nginx"]))
    print(f"firewall table loaded {(nginx - loaded) / 1e6:.2f} s before nginx started")
    assert 0 < loaded < nginx, "nginx started before the firewall table was loaded"
    assert set(known) <= set(tasks(lab, a)), "tasks saved at the clean stop are back"


# --- 6: broken configuration ----------------------------------------------------------------


@pytest.fixture
def broken_template(tmp_path: Path):
    """A directory of templates that shadow flowerbed's: `broken_template(name, extra_line)`."""

    def make(name: str, line: str) -> dict[str, str]:
        (tmp_path / name).write_text((TEMPLATES / name).read_text() + line + "\n")
        return {"FLOWERBED_TEST_TEMPLATES": str(tmp_path)}

    return make


def test_a_broken_nginx_template_is_never_applied(
    lab: Lab, broker: Broker, hosts: list[str], broken_template
):
    a = hosts[0]
    site = "/etc/nginx/conf.d/flowerbed.conf"
    before = sha(lab, a, site)
    env = broken_template("nginx-https.conf.j2", "flowerbed_broken_template on;")
    result = deploy(broker, [a], deploy_file=WITH_TEMPLATES, env=env)
    assert result.returncode != 0, result.explain()  # its only host failed: no JSON
    assert 'unknown directive "flowerbed_broken_template"' in result.log
    assert sha(lab, a, site) == before and dashboard(lab, a)[0] == 200
    assert converged(deploy(broker, [a])).totals["success"] == 0, "nothing was left changed"


def test_a_broken_nftables_template_is_never_applied(
    lab: Lab, broker: Broker, hosts: list[str], broken_template
):
    a = hosts[0]
    before = nft_table(lab, a)
    env = broken_template("nftables-flowerbed.nft.j2", "flowerbed broken template")
    result = deploy(broker, [a], deploy_file=WITH_TEMPLATES, env=env)
    assert result.returncode != 0, result.explain()  # its only host failed: no JSON
    assert "fails nft -c: nothing changed" in result.log
    assert nft_table(lab, a) == before and dashboard(lab, a)[0] == 200
    assert lab.ssh(a, ["true"]).returncode == 0
    assert converged(deploy(broker, [a])).totals["success"] == 0, "nothing was left changed"


def test_an_app_flower_cannot_import_fails_its_host_before_the_restart_and_spares_the_others(
    lab: Lab, broker: Broker, hosts: list[str]
):
    a, b = hosts
    before = {name: unit(lab, name)["MainPID"] for name in hosts}
    # the app's source installs, its module does not exist: Flower could not start
    app = {"flower_app": "flowerbed_demo.no_such_app:app", "flower_app_source": "lab/demo_app"}
    result = deploy(
        broker, hosts, inventory=HOST_DATA_INVENTORY,
        env={"FLOWERBED_TEST_HOST_DATA": json.dumps({a: app})},
    )  # fmt: skip
    try:
        assert result.returncode != 0 and result.stdout, result.explain()
        assert result.failed_hosts == [a], result.explain()
        assert "cannot be loaded: ModuleNotFoundError flowerbed_demo.no_such_app" in result.log
        assert "| Restart Flower (" in result.failed_operations(a)[0], result.explain()
        # a keeps the Flower it ran, serving; b was never touched
        assert {name: unit(lab, name)["MainPID"] for name in hosts} == before
        assert serves_the_worker(lab, a) and serves_the_worker(lab, b)
        assert not any(b in op["success"] for op in result.report["results"]["operations"])
    finally:
        converged(deploy(broker, [a]))
    wait_until(lambda: serves_the_worker(lab, a), 60, f"{a} shows {WORKER} after its restart")


# --- 7: Flower killed -----------------------------------------------------------------------


def test_flower_killed_loses_at_most_the_last_save_interval(lab: Lab, hosts: list[str]):
    b = hosts[1]
    pid = unit(lab, b)["MainPID"]
    known = tasks(lab, b)
    kill = f"systemctl kill -s KILL flower && date +%s.%N && stat -c %.9Y {NEWEST_STATE}"
    killed_at, saved_at = map(float, sh(lab, b, kill).split())
    wait_until(lambda: unit(lab, b)["MainPID"] not in ("0", pid), 30, "systemd restarts Flower")
    wait_until(lambda: serves_the_worker(lab, b), 60, "Flower serves again")
    kept = tasks(lab, b)
    lost = {uuid: when for uuid, when in known.items() if uuid not in kept}
    interval = SAVE_INTERVAL_MS / 1000
    oldest = max((killed_at - when for when in lost.values()), default=0)
    print(f"SIGKILL {killed_at - saved_at:.2f} s after the last save (every {interval:g} s): "
          f"{len(lost)} of {len(known)} tasks Flower knew were lost, the oldest first seen "
          f"{oldest:.2f} s before the kill")  # fmt: skip
    assert unit(lab, b)["ActiveState"] == "active"
    assert killed_at - saved_at <= interval + 1, "the state on disk was older than an interval"
    older = [uuid for uuid, when in known.items() if when < saved_at - 1]
    assert older and all(uuid in kept for uuid in older), "saved tasks were lost"


# --- 4: a renewal that cannot reach the ACME CA; 8: Flower's state directory full -----------


def verify(broker: Broker, name: str, tmp_path: Path) -> tuple[DeployResult, dict]:
    """verify.py on one host: (the run, that host's layers from the JSON summary)."""
    summary = tmp_path / "verify.json"
    summary.unlink(missing_ok=True)
    data = {"flower_verify_summary_file": str(summary)}
    result = deploy(broker, [name], data, flags=("-y",), deploy_file="verify.py")
    assert summary.exists(), result.explain()
    return result, json.loads(summary.read_text())["hosts"][name]["layers"]


def served_serial(lab: Lab, name: str) -> str:
    fqdn = lab.host(name)["fqdn"]
    hello = ["openssl", "s_client", "-connect", f"{fqdn}:443", "-servername", fqdn]
    pem = subprocess.run(hello, input="", capture_output=True, text=True, timeout=15).stdout
    serial = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                            capture_output=True, text=True, check=True)  # fmt: skip
    return serial.stdout.strip()


def test_a_failed_renewal_keeps_the_old_certificate_and_shows(
    lab: Lab, broker: Broker, hosts: list[str], tmp_path: Path
):
    b = hosts[1]
    serial = served_serial(lab, b)
    renewal = sh(lab, b, "ls /etc/letsencrypt/renewal/*.conf")
    assert len(renewal.split()) == 1, renewal
    unreachable = "s|^server = .*|server = https://10.77.0.1:14001/dir|"
    sh(lab, b, f"cp -p {renewal} /root/renewal.conf && sed -i '{unreachable}' {renewal}")
    sh(lab, b, "echo 'force-renewal = true' >> /etc/letsencrypt/cli.ini")
    try:
        renew = lab.ssh(b, ["systemctl", "start", "certbot.service"], timeout=180)
        assert renew.returncode != 0, "the renewal could not reach the CA"
        journal = sh(lab, b, ["journalctl", "-u", "certbot.service", "-n", "50", "--no-pager"])
        assert "14001" in journal and "fail" in journal.lower(), journal
        assert served_serial(lab, b) == serial and dashboard(lab, b)[0] == 200
        result, layers = verify(broker, b, tmp_path)
        assert not result.ok and not layers["renewal"]["ok"], layers["renewal"]
        assert "certbot.service" in layers["renewal"]["problem"]
        assert layers["certificate"]["ok"], "the old certificate is still valid"
    finally:
        sh(lab, b, f"mv /root/renewal.conf {renewal}")
        sh(lab, b, "sed -i '/^force-renewal = true$/d' /etc/letsencrypt/cli.ini")
        sh(lab, b, "systemctl reset-failed certbot.service")


def small_state_disk(lab: Lab, name: str, mounted: bool) -> None:
    """Flower stopped (it saves), its state moved onto a 2 MiB tmpfs over its state directory
    (or back off it), Flower started again."""
    state, copy = STATE_DIR, "/root/flower-state"
    size = "size=2m,mode=0700,uid=flower,gid=flower"
    swap = f"mount -t tmpfs -o {size} flowerbed-full {state}" if mounted else f"umount {state}"
    steps = ["systemctl stop flower", f"rm -rf {copy}", f"cp -a {state} {copy}", swap,
             f"cp -a {copy}/. {state}/", f"rm -rf {copy}",
             # the test's own restarts count against Flower's start limit: not this one
             "systemctl reset-failed flower", "systemctl start flower"]  # fmt: skip
    sh(lab, name, " && ".join(steps))


def test_a_full_state_directory_keeps_flower_serving_and_shows(
    lab: Lab, broker: Broker, hosts: list[str], tmp_path: Path
):
    b = hosts[1]
    small_state_disk(lab, b, mounted=True)
    try:
        wait_until(lambda: serves_the_worker(lab, b), 60, "Flower serves on its small disk")
        known = tasks(lab, b)
        full_at = sh(lab, b, f"dd if=/dev/zero of={STATE_DIR}/filler bs=4k 2>/dev/null; date +%s")
        # gdbm (Debian 12 with python3-gdbm) says ENOSPC; sqlite3 (Debian 13's dbm) "disk is full"
        failed = (
            "journalctl -u flower --since @{} --no-pager | grep -qE 'No space left|disk is full'"
        )
        wait_until(lambda: lab.ssh(b, failed.format(full_at)).returncode == 0, 30, "a save fails")
        age = f"echo $(( $(date +%s) - $(stat -c %Y {NEWEST_STATE}) ))"

        def unsaved_while_serving() -> bool:
            assert serves_the_worker(lab, b), "Flower stopped serving with its disk full"
            return int(sh(lab, b, age)) > 3 * SAVE_INTERVAL_MS / 1000 + 10  # verify's tolerance

        wait_until(unsaved_while_serving, 60, "no save for longer than verify tolerates")
        result, layers = verify(broker, b, tmp_path)
        print(f"verify with the state directory full: {layers['state']}")
        assert not result.ok and not layers["state"]["ok"], layers["state"]
        assert "100% full" in layers["state"]["problem"]
        freed = float(sh(lab, b, f"rm {STATE_DIR}/filler && date +%s"))
        saved = f"stat -c %Y {NEWEST_STATE}"
        wait_until(lambda: float(sh(lab, b, saved)) > freed, 30, "Flower saves again")
        sh(lab, b, "systemctl restart flower")  # a clean stop saves; the start loads it
        wait_until(lambda: serves_the_worker(lab, b), 60, "Flower serves after its restart")
        assert set(known) <= set(tasks(lab, b)), "tasks were lost"
        _, layers = verify(broker, b, tmp_path)
        assert layers["state"]["ok"], layers["state"]
    finally:
        small_state_disk(lab, b, mounted=False)
    wait_until(lambda: serves_the_worker(lab, b), 60, "Flower serves from its own disk again")
