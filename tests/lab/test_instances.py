"""Several Flowers on one host (issue 21, part 2: flower_instances), on one fresh host.

`alpha` runs on the lab's broker (Redis db 0, the lab's worker); `beta` on Redis db 11, with a
worker this module starts on the lab machine (and stops). In order: bad entries are refused
before the host changes; with both deployed, each API lists only its own workers (polled: a
worker shows once Flower has its events), each path lets in only its own logins, no instance
secret is in the output and a second run changes nothing; `rotate_instance=beta` changes beta's
logins only; verify.py reports each instance and flags a stopped one; dropping beta removes
it (unit, socket, location, state in a dated backup) while alpha keeps answering; with both
dropped the main Flower's files are byte for byte as the default made them; remove.py takes
every recorded instance off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import REPO, Lab
from deploy_helpers import assert_no_secret, run_deploy
from test_edge import curl

pytestmark = pytest.mark.lab

LAB_WORKER = "demo@labmachine"
BETA_WORKER = "beta@instances-test"
BETA_DB = 11
DEMO_APP = REPO / "lab" / "demo_app"
CELERY = REPO / ".venv" / "bin" / "celery"
INVENTORY = "tests/inventories/lab.py"
MAIN_FILES = (
    "/etc/nginx/conf.d/flowerbed.conf",
    "/etc/systemd/system/flower.service",
    "/etc/flower/flowerconfig.py",
)
PASSWORDS = {
    "ALPHA_USERS": "ann:alpha-Pw-2f9c1d7e5b3a",
    "BETA_USERS": "bob:beta-Pw-7a1e3c5d9f2b",
}


def entry(name: str, path: str, minimum: int = 1) -> dict:
    upper = name.upper()
    return {
        "name": name, "broker_env": f"{upper}_BROKER_URL", "path": path,
        "logins_env": f"{upper}_USERS", "healthcheck_min_workers": minimum,
    }  # fmt: skip


BOTH = [entry("alpha", "alpha"), entry("beta", "team/beta")]


def on_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="module")
def setup(lab: Lab, module_hosts, tmp_path_factory) -> dict:
    """A fresh host deployed with the defaults (the main files' digests kept), an env file with
    the instances' secrets, and beta's worker on Redis db 11."""
    host = module_hosts(prefix="in")
    env_file = tmp_path_factory.mktemp("instances") / "lab.env"
    shutil.copy(lab.state["secrets_file"], env_file)
    env_file.chmod(0o600)
    broker = lab.secrets["FLOWERBED_BROKER_URL"]
    secrets = {
        "ALPHA_BROKER_URL": broker,
        "BETA_BROKER_URL": on_db(broker, BETA_DB),
        **PASSWORDS,
    }
    with env_file.open("a") as out:
        out.writelines(f"{name}={value}\n" for name, value in secrets.items())
    env = {
        "FLOWERBED_ENV_FILE": str(env_file),
        "FLOWERBED_TEST_ONLY_HOSTS": json.dumps([host["name"]]),  # --data reaches no other host
    }
    worker = subprocess.Popen(
        [str(CELERY), "-A", "flowerbed_demo.app", "worker", "-E", "--concurrency=1",
         f"--hostname={BETA_WORKER}", "--loglevel=WARNING"],
        env={**os.environ, "CELERY_BROKER_URL": secrets["BETA_BROKER_URL"],
             "PYTHONPATH": str(DEMO_APP)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deployed = run_deploy(host["name"], env=env, inventory=INVENTORY)
        assert deployed.ok, deployed.explain()
        state = {
            "host": host, "env": env, "env_file": env_file, "secrets": secrets,
            "defaults": digests(lab, host["name"], MAIN_FILES),
        }  # fmt: skip
        yield state
    finally:
        os.killpg(worker.pid, signal.SIGTERM)  # the worker this module started, by its own id
        worker.wait(timeout=60)


def digests(lab: Lab, name: str, paths: tuple[str, ...]) -> dict[str, str]:
    out = lab.ssh(name, ["sha256sum", *paths], check=True).stdout
    return {path: digest for digest, path in (line.split() for line in out.splitlines())}


def deploy(setup: dict, instances: list[dict], deploy_file: str = "deploy.py", **data):
    return run_deploy(
        setup["host"]["name"], {"flower_instances": instances, **data},
        env=setup["env"], deploy_file=deploy_file, inventory=INVENTORY,
    )  # fmt: skip


def login(setup: dict, variable: str) -> tuple[str, str]:
    from dotenv import dotenv_values

    value = dotenv_values(setup["env_file"])[variable]
    user, _, password = value.split(",")[0].partition(":")
    return user, password


def status(lab: Lab, setup: dict, path: str, auth: tuple[str, str]) -> int:
    return curl(lab, f"https://{setup['host']['fqdn']}{path}", auth=auth)[0]


def workers(lab: Lab, setup: dict, base: str, auth: tuple[str, str]) -> dict | None:
    code, _, body = curl(lab, f"https://{setup['host']['fqdn']}{base}api/workers?status=true",
                         auth=auth)  # fmt: skip
    return json.loads(body) if code == 200 else None


def wait_until(check, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(every)  # the next look of the poll


def all_secrets(setup: dict) -> list[str]:
    values = [
        setup["secrets"]["BETA_BROKER_URL"],
        urlsplit(setup["secrets"]["BETA_BROKER_URL"]).password,
    ]
    return [v for v in values if v] + [p.partition(":")[2] for p in PASSWORDS.values()]


def test_bad_entries_are_refused_before_the_host_changes(lab: Lab, setup: dict):
    before = lab.ssh(
        setup["host"]["name"],
        "ls -la --time-style=full-iso /etc/flower /etc/nginx/conf.d /var/lib",
        check=True,
    ).stdout
    bad = [
        {**entry("alpha", "api"), "name": "Alpha"},
        {**entry("beta", "team"), "colour": 1},
        {"name": "gamma", "broker_env": "BETA_BROKER_URL", "path": "team/gamma"},
    ]  # fmt: skip
    refused = deploy(setup, bad)
    assert not refused.ok
    for expected in (
        "flower_instances['Alpha'].name", "flower_instances['Alpha'].path",
        "flower_instances['beta'].colour: unknown field",
        "flower_instances['gamma'].logins_env: missing",
        "no host was changed",
    ):  # fmt: skip
        assert expected in refused.log, refused.log
    after = lab.ssh(
        setup["host"]["name"],
        "ls -la --time-style=full-iso /etc/flower /etc/nginx/conf.d /var/lib",
        check=True,
    ).stdout
    assert before == after


def test_an_instance_whose_names_the_host_has_is_refused(lab: Lab, setup: dict):
    """A hand-made flower-alpha.service and another service's /var/lib/flower-alpha: the
    instance would overwrite the one and chown the other (StateDirectory=), then rm -rf it
    when dropped. Refused before any change, naming both."""
    name = setup["host"]["name"]
    unit = "/etc/systemd/system/flower-alpha.service"
    made = f"mkdir -p /var/lib/flower-alpha && printf '[Service]\\nExecStart=/bin/true\\n' > {unit}"
    lab.ssh(name, made, check=True)
    listing = "ls -la --time-style=full-iso /etc/flower /etc/nginx/conf.d /var/lib"
    try:
        before = lab.ssh(name, listing, check=True).stdout
        refused = deploy(setup, [entry("alpha", "alpha")])
        assert not refused.ok
        named = [ln for ln in refused.log.splitlines() if "instance 'alpha': " in ln]
        assert any(unit in ln and "/var/lib/flower-alpha" in ln for ln in named), refused.log
        assert lab.ssh(name, listing, check=True).stdout == before
    finally:
        lab.ssh(name, f"rm -rf {unit} /var/lib/flower-alpha", check=True)


def test_each_instance_shows_its_own_workers_and_lets_in_its_own_logins(lab: Lab, setup: dict):
    started = time.monotonic()
    deployed = deploy(setup, BOTH)
    assert deployed.ok, deployed.explain()
    setup["times"] = {"add": time.monotonic() - started}
    assert_no_secret(deployed, all_secrets(setup))
    main, alpha, beta = lab.dashboard_login, login(setup, "ALPHA_USERS"), login(setup, "BETA_USERS")

    def own(base, auth, mine, other):
        found = workers(lab, setup, base, auth)
        return found if found and found.get(mine) and other not in found else None

    wait_until(
        lambda: own("/alpha/", alpha, LAB_WORKER, BETA_WORKER),
        90,
        "alpha sees the lab's worker only",
    )
    seen = wait_until(
        lambda: own("/team/beta/", beta, BETA_WORKER, LAB_WORKER),
        90,
        "beta sees its own worker only",
    )
    assert set(seen) == {BETA_WORKER}, seen
    paths = {
        "main": "/api/task/types",
        "alpha": "/alpha/api/task/types",
        "beta": "/team/beta/api/task/types",
    }
    logins = {"main": main, "alpha": alpha, "beta": beta}
    for who, auth in logins.items():
        for where, path in paths.items():
            code = status(lab, setup, path, auth)
            if who == where:
                assert code == 200, (who, where, code)
            else:
                assert code in (401, 429), (who, where, code)
    name = setup["host"]["name"]
    # one Flower's login at another's path costs a bcrypt check there too (flowerbed.decoy):
    # never nginx's fast "was not found", which tells a guesser the name is real elsewhere
    errors = lab.ssh(name, ["cat", "/var/log/nginx/error.log"], check=True).stdout
    for user in {main[0], alpha[0], beta[0]}:
        assert f'user "{user}" was not found' not in errors, errors
    modes = lab.ssh(
        name,
        "stat -c '%n %U:%G %a' /etc/nginx/flowerbed-instance-*.htpasswd "
        "/var/lib/flowerbed/flower-instances /etc/flower/instances/*/*.env",
        check=True,
    ).stdout
    assert "/etc/nginx/flowerbed-instance-alpha.htpasswd root:www-data 640" in modes
    assert "/var/lib/flowerbed/flower-instances root:root 600" in modes
    assert "/etc/flower/instances/beta/flower-beta.env root:root 600" in modes
    for unit in ("flower-alpha.service", "flower-beta.service"):
        assert lab.ssh(name, ["systemctl", "is-active", unit]).stdout.strip() == "active"
    units = lab.ssh(
        name, "cat /etc/systemd/system/flower-*.service; ps -eo args", check=True
    ).stdout
    for secret in all_secrets(setup):
        assert secret not in units
    started = time.monotonic()
    again = deploy(setup, BOTH)
    setup["times"]["noop"] = time.monotonic() - started
    assert again.ok and again.totals["success"] == 0, again.explain()


def test_rotating_beta_changes_beta_logins_only(lab: Lab, setup: dict):
    name = setup["host"]["name"]
    files = ("/etc/nginx/flowerbed.htpasswd", "/etc/nginx/flowerbed-instance-alpha.htpasswd",
             "/etc/nginx/flowerbed-instance-beta.htpasswd")  # fmt: skip
    before = digests(lab, name, files)
    old = login(setup, "BETA_USERS")
    rotated = run_deploy(
        name, {"flower_instances": BOTH, "rotate_instance": "beta"}, flags=("-y", "--json"),
        env=setup["env"], deploy_file="rotate.py", inventory=INVENTORY,
    )  # fmt: skip
    assert rotated.ok, rotated.explain()
    new = login(setup, "BETA_USERS")
    assert new != old
    assert_no_secret(rotated, [new[1], old[1]])
    after = digests(lab, name, files)
    assert after[files[2]] != before[files[2]]
    assert after[files[0]] == before[files[0]] and after[files[1]] == before[files[1]]
    assert status(lab, setup, "/team/beta/api/task/types", new) == 200
    assert status(lab, setup, "/team/beta/api/task/types", old) in (401, 429)
    assert status(lab, setup, "/alpha/api/task/types", login(setup, "ALPHA_USERS")) == 200


def test_verify_reports_each_instance_and_flags_a_stopped_one(lab: Lab, setup: dict):
    name = setup["host"]["name"]
    verified = deploy(setup, BOTH, deploy_file="verify.py")
    assert verified.ok, verified.log
    assert re.search(r"\s2/2\s", verified.log), verified.log  # the instances column
    assert "instance:" not in verified.log.replace("Each instance", ""), verified.log
    lab.ssh(name, ["systemctl", "stop", "flower-beta.service"], check=True)
    try:
        flagged = deploy(setup, BOTH, deploy_file="verify.py")
        assert not flagged.ok
        assert "instance:beta: flower-beta.service is inactive" in flagged.log, flagged.log
        assert "instance:alpha:" not in flagged.log
    finally:
        lab.ssh(name, ["systemctl", "start", "flower-beta.service"], check=True)


def test_dropping_beta_removes_it_while_alpha_keeps_serving(lab: Lab, setup: dict):
    name = setup["host"]["name"]
    alpha = login(setup, "ALPHA_USERS")
    failures, polls, stop = [], [0], threading.Event()

    def poll():
        while not stop.is_set():
            code = status(lab, setup, "/alpha/api/task/types", alpha)
            polls[0] += 1
            if code != 200:
                failures.append(code)
            stop.wait(0.25)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.monotonic()
    try:
        dropped = deploy(setup, [BOTH[0]])
    finally:
        stop.set()
        poller.join()
    setup["times"]["drop"] = time.monotonic() - started
    setup["times"]["polls_during_drop"] = polls[0]
    assert dropped.ok, dropped.explain()
    assert not failures and polls[0] > 3, (failures, polls)
    gone = (
        "/etc/systemd/system/flower-beta.service", "/run/flower-beta", "/var/lib/flower-beta",
        "/etc/flower/instances/beta", "/etc/nginx/flowerbed-instance-beta.htpasswd",
    )  # fmt: skip
    listed = lab.ssh(name, f"ls -d {' '.join(gone)} 2>&1").stdout
    assert all(f"{path}': No such file" in listed for path in gone), listed
    assert (
        lab.ssh(name, ["systemctl", "is-active", "flower-beta.service"]).stdout.strip() != "active"
    )
    record = lab.ssh(name, ["cat", "/var/lib/flowerbed/flower-instances"], check=True).stdout
    assert record == "alpha\n", record
    backup = lab.ssh(
        name,
        "stat -c '%a %U' /var/backups/flowerbed-flower-beta-*.tar.gz; "
        "tar tzf /var/backups/flowerbed-flower-beta-*.tar.gz",
        check=True,
    ).stdout
    assert backup.startswith("600 root\n") and "var/lib/flower-beta/" in backup, backup
    assert "/team/beta/" not in lab.ssh(name, ["cat", "/etc/nginx/conf.d/flowerbed.conf"]).stdout
    assert status(lab, setup, "/team/beta/api/task/types", login(setup, "BETA_USERS")) in (401, 429)
    again = deploy(setup, [BOTH[0]])
    assert again.ok and again.totals["success"] == 0, again.explain()


def test_with_none_left_the_main_files_are_the_defaults_and_remove_takes_all_off(
    lab: Lab, setup: dict
):
    name = setup["host"]["name"]
    none = deploy(setup, [])
    assert none.ok, none.explain()
    assert digests(lab, name, MAIN_FILES) == setup["defaults"]
    gone = lab.ssh(
        name,
        "ls -d /etc/flower/instances /var/lib/flowerbed/flower-instances "
        "/etc/systemd/system/flower-alpha.service 2>&1",
    ).stdout
    assert gone.count("No such file or directory") == 3, gone
    both = deploy(setup, BOTH)
    assert both.ok, both.explain()
    removed = deploy(setup, BOTH, deploy_file="remove.py")
    assert removed.ok, removed.explain()
    units = lab.ssh(
        name,
        "ls /etc/systemd/system /var/lib /etc/nginx; systemctl list-units --all --no-legend",
        check=True,
    ).stdout
    for what in ("flower-alpha", "flower-beta", "flowerbed-instance-"):
        assert what not in units, units
    print(f"instances timings: {setup['times']}")
