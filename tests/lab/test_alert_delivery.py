"""Alerts that reach a person (issue 22): a monitoring host mails the conditions of a dashboard.

A fresh lab host (`mon`, flower_monitoring_only) runs the monitoring part for the shared h1
(its address joins h1's flower_monitoring_sources by itself); Alertmanager mails the lab's
SMTP inbox (lab/lab_smtp.py: STARTTLS, a login whose password is made for this test and given
only through an env file of its own). Rules and Alertmanager use short waits (LAB_MONITORING)
so each mail comes within seconds; every wait polls. In one run, in order:

- every target up, the rules loaded, verify.py's monitoring layers fine;
- the lab's worker stops: a mail names h1 and the condition and links the dashboard; the worker
  comes back (always, in a finally): a resolved mail;
- failures over the threshold (150 failing tasks): one mail;
- a run stuck past the lab's threshold (the demo app's `hang`, 45 s): one mail, and a resolved
  one when the run ends;
- h1's certificate near expiry (the rule's `certificate_days` above the days it has left: the
  lab's ACME CA, Debian's pebble 2.4, cannot issue short-lived certificates): one mail;
- a second deploy changes nothing;
- the SMTP password is in no output (-vvv, --dry --diff), no process list on the host, no file
  others can read there (the password file is 0640 root:prometheus);
- a wrong SMTP password: the deploy goes through, Prometheus keeps running, the inbox refuses
  the login and verify.py reports Alertmanager's failing deliveries.

Each test prints the time from its event to its mail. The module runs alone (tests/run_suite.py):
it stops the shared worker.

    make test PYTEST_ARGS=tests/lab/test_alert_delivery.py
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import time
from pathlib import Path

import lab_smtp
import pytest
from conftest import LAB_CLI, REPO, Lab
from deploy_helpers import DeployResult, run_deploy
from lab_prometheus import LAB_RULES
from lab_worker import WORKER, demo, put_back, queue_drained, stop_mid_task
from test_secret_output import fingerprints

pytestmark = pytest.mark.lab

DASHBOARD = "h1"
INVENTORY = "tests/inventories/lab.py"
PASSWORD_ENV = "FLOWERBED_TEST_SMTP_PASSWORD"
LAB_MONITORING = {
    "flower_monitoring_scrape_interval": "5s",
    "flower_monitoring_evaluation_interval": "5s",
    "flower_monitoring_group_wait": "5s",
    "flower_monitoring_group_interval": "10s",
    "flower_monitoring_repeat_interval": "1h",
}
PROMETHEUS = "http://127.0.0.1:9090/api/v1"


# after the first mail of a group, how long to watch for a second one (group_interval + a margin)
ONE_MAIL_WATCH_S = 25


def until(what: str, check, timeout: float = 180, every: float = 2):
    """Poll `check` until it returns something true; that value, or fail saying `what`."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(every)
    return found


class Setup:
    def __init__(self, lab: Lab, mon: str, tmp_path: Path):
        self.lab, self.mon, self.tmp_path = lab, mon, tmp_path
        self.password = secrets.token_urlsafe(24)
        self.inbox = lab_smtp.ensure_smtp(self.password)
        self.env_file = tmp_path / "operator.env"
        # lab/lab_prometheus.py's: quick, and the demo producer's failures stay quiet
        self.rules = dict(LAB_RULES)
        self.results: list[DeployResult] = []

    def host_data(self) -> dict:
        return {
            DASHBOARD: {"flower_monitoring_host": self.mon},
            self.mon: {
                "flower_monitoring_host": self.mon,
                "flower_monitoring_only": True,
                "flower_monitoring_ca_bundle": self.lab.state["acme"]["root"],
                "flower_monitoring_smtp_smarthost": self.inbox["smarthost"],
                "flower_monitoring_smtp_from": "alerts@flowerbed.test",
                "flower_monitoring_mail_to": ["ops@flowerbed.test"],
                "flower_monitoring_smtp_user": self.inbox["user"],
                "flower_monitoring_smtp_password_env": PASSWORD_ENV,
                "flower_monitoring_smtp_ca_bundle": self.inbox["ca"],
                **LAB_MONITORING,
                "flower_monitoring_rules": self.rules,
            },
        }

    def write_env(self, password: str) -> None:
        """The lab's secrets plus the SMTP password: the operator's .env for these runs."""
        lab_env = Path(self.lab.state["secrets_file"]).read_text()
        staging = self.env_file.with_suffix(".new")
        staging.touch(mode=0o600)
        staging.write_text(f"{lab_env.rstrip()}\n{PASSWORD_ENV}={password}\n")
        staging.rename(self.env_file)

    def deploy(self, hosts: list[str], flags=("-y", "--json"), deploy_file="deploy.py"):
        result = run_deploy(
            hosts,
            flags=flags,
            inventory=INVENTORY,
            deploy_file=deploy_file,
            env={
                "FLOWERBED_ENV_FILE": str(self.env_file),
                "FLOWERBED_TEST_HOST_DATA": json.dumps(self.host_data()),
            },
        )
        self.results.append(result)
        return result

    def prometheus(self, path: str) -> dict:
        done = self.lab.ssh(self.mon, ["curl", "-sS", "--max-time", "5", f"{PROMETHEUS}/{path}"])
        try:
            return json.loads(done.stdout)
        except ValueError:
            return {}

    def targets_up(self) -> list[dict] | None:
        targets = self.prometheus("targets?state=active").get("data", {}).get("activeTargets", [])
        jobs = {t["labels"]["job"] for t in targets}
        ok = {"flower", "flower-tls", "monitoring"} <= jobs
        return targets if ok and all(t["health"] == "up" for t in targets) else None

    def diagnosis(self) -> str:
        """What Prometheus and Alertmanager say, and every mail the inbox has (on a failure)."""
        alerts = self.prometheus("alerts").get("data", {}).get("alerts", [])
        journal = self.lab.ssh(self.mon, "journalctl -u prometheus-alertmanager -n 20 --no-pager")
        subjects = [m["subject"] for m in lab_smtp.mails()]
        return (f"Prometheus alerts: {json.dumps(alerts)[:3000]}\nAlertmanager: "
                f"{journal.stdout[-3000:]}\nmails: {subjects}")  # fmt: skip

    def verify(self) -> DeployResult:
        return self.deploy([self.mon], flags=("-y",), deploy_file="verify.py")


def mailed_at(mail: dict) -> float:
    return float(Path(mail["path"]).name.split("-")[0])


def mail_like(status: str, alert: str, after: float):
    def check():
        return [
            m
            for m in lab_smtp.mails()
            if mailed_at(m) >= after
            and m["subject"].startswith(f"[{status}] {alert} on {DASHBOARD}.")
        ]

    return check


def assert_no_password(setup: Setup, password: str) -> None:
    for result in setup.results:
        for form in fingerprints(password):
            assert form not in result.stdout + result.stderr, (
                f"a form of the SMTP password is in the output of {' '.join(result.args[2:4])}"
            )
    ps = setup.lab.ssh(setup.mon, ["ps", "-ww", "-eo", "args"], check=True).stdout
    assert password not in ps, "the SMTP password is in the monitoring host's process list"
    # every regular file others can read, searched on the host for the password (on stdin)
    scan = (
        "import os,sys\npw=sys.stdin.read().encode()\n"
        "for top in ('/etc','/var/lib/prometheus','/tmp','/var/tmp','/run','/root','/home'):\n"
        " for d,_,fs in os.walk(top):\n"
        "  for f in fs:\n"
        "   p=os.path.join(d,f)\n"
        "   try:\n"
        "    s=os.lstat(p)\n"
        "    if os.path.isfile(p) and s.st_mode&4 and pw in open(p,'rb').read(4<<20): print(p)\n"
        "   except OSError: pass\n"
    )
    found = subprocess.run(
        [*LAB_CLI, "ssh", setup.mon, "python3 -c " + shlex.quote(scan)],
        input=password, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert found.returncode == 0 and not found.stdout.strip(), found.stdout + found.stderr
    mode = setup.lab.ssh(
        setup.mon, ["stat", "-c", "%a %U %G", "/etc/prometheus/flowerbed/smtp-password"], check=True
    )
    assert mode.stdout.split() == ["640", "root", "prometheus"]


@pytest.fixture(scope="module")
def monitoring(lab: Lab, module_hosts, tmp_path_factory) -> Setup:
    """A fresh monitoring host for h1, deployed, its targets up; the inbox stopped and h1 put
    back without it at the end."""
    mon = module_hosts(prefix="mon")["name"]
    setup = Setup(lab, mon, tmp_path_factory.mktemp("alert-delivery"))
    setup.write_env(setup.password)
    try:
        first = setup.deploy([DASHBOARD, mon], flags=("-y", "--json", "-vvv"))
        assert first.ok, first.explain()
        assert first.changed_hosts("prometheus.yml") == [mon]
        yield setup
    finally:
        lab_smtp.stop("smtp")
        # h1 as the other tests know it: without the monitoring host's address
        restored = run_deploy([DASHBOARD])
        assert restored.ok, restored.explain()


def mail_for(setup: Setup, status: str, alert: str, after: float, timeout: float = 180) -> dict:
    """The first mail of `status` for `alert` on h1 since `after`; on a timeout, what Prometheus
    and Alertmanager saw."""
    try:
        return until(f"{status} mail for {alert}", mail_like(status, alert, after), timeout)[0]
    except AssertionError as error:
        raise AssertionError(f"{error}\n{setup.diagnosis()}") from None


def assert_one_mail(alert: str, after: float) -> None:
    """No second FIRING mail for `alert` within a group interval and a margin of the first."""
    deadline = time.monotonic() + ONE_MAIL_WATCH_S
    while time.monotonic() < deadline:
        firing = mail_like("FIRING", alert, after)()
        assert len(firing) == 1, [m["subject"] for m in firing]
        time.sleep(2)


def test_the_monitoring_host_scrapes_h1_and_verifies(monitoring: Setup):
    setup, lab, mon = monitoring, monitoring.lab, monitoring.mon
    targets = until("target up in every job", setup.targets_up)
    assert {t["labels"]["instance"] for t in targets if t["labels"]["job"] == "flower"} == {
        f"{DASHBOARD}.flowerbed.test"
    }
    groups = setup.prometheus("rules").get("data", {}).get("groups", [])
    assert {"flowerbed-celery", "flowerbed-flower"} <= {g["name"] for g in groups}
    for port in (9090, 9093, 9115):  # loopback only
        listening = lab.ssh(mon, ["ss", "-Htln", f"sport = :{port}"], check=True).stdout
        assert listening.strip() and all("127.0.0.1:" in line for line in listening.splitlines())
    verified = until("healthy verify run", lambda: (v := setup.verify()).ok and v, 120, 5)
    assert "delivery" in verified.stdout, verified.explain()


def test_a_stopped_worker_mails_then_resolves(monitoring: Setup):
    setup, lab = monitoring, monitoring.lab
    stopped_at = time.time()
    try:
        stop_mid_task(lab)
        firing = mail_for(setup, "FIRING", "CeleryWorkersMissing", stopped_at)
        fired_after = mailed_at(firing) - stopped_at
        body = firing["body"]
        assert f"Dashboard: https://{DASHBOARD}.flowerbed.test/" in body, body
        assert "CeleryWorkersMissing" in body and f"{DASHBOARD}.flowerbed.test" in body
    finally:
        coming_back = time.time()  # (the resolved mail may come before put_back returns)
        put_back(lab, [DASHBOARD])
    resolved = mail_for(setup, "RESOLVED", "CeleryWorkersMissing", coming_back)
    print(
        f"\nworker stopped -> mail: {fired_after:.0f} s; "
        f"worker started again -> resolved mail: {mailed_at(resolved) - coming_back:.0f} s"
    )


def test_failures_over_the_threshold_mail_once(monitoring: Setup):
    setup, lab = monitoring, monitoring.lab
    queue_drained(lab)  # the failures are not queued behind what piled up while a worker was away
    sent_at = time.time()
    demo(lab, "from flowerbed_demo.app import fail\nfor _ in range(150): fail.delay('on purpose')")
    firing = mail_for(setup, "FIRING", "CeleryTaskFailureRatioHigh", sent_at)
    assert "of Celery tasks failed on h1.flowerbed.test" in firing["body"], firing["body"]
    print(f"\n150 failing tasks sent -> mail: {mailed_at(firing) - sent_at:.0f} s")
    assert_one_mail("CeleryTaskFailureRatioHigh", sent_at)


def test_a_stuck_task_mails_once(monitoring: Setup):
    setup, lab = monitoring, monitoring.lab
    stuck_after = LAB_RULES["stuck_after"]
    run_s = 120  # past the threshold, its `for:`, a scrape, an evaluation and the group wait
    sent_at = time.time()
    demo(lab, f"from flowerbed_demo.app import hang\nhang.delay({run_s})")
    firing = mail_for(setup, "FIRING", "CeleryTaskStuck", sent_at)
    expected = f"A run of flowerbed_demo.hang on {WORKER} started over {stuck_after}"
    assert expected in firing["body"], firing["body"]
    print(f"\nrun started -> mail: {mailed_at(firing) - sent_at:.0f} s (threshold {stuck_after})")
    assert_one_mail("CeleryTaskStuck", sent_at)
    # the run ends: a resolved mail (and the worker has both its processes again)
    resolved = mail_for(setup, "RESOLVED", "CeleryTaskStuck", sent_at, timeout=run_s + 120)
    print(f"run ended -> resolved mail: {mailed_at(resolved) - sent_at - run_s:.0f} s")


def test_a_certificate_near_expiry_mails_once(monitoring: Setup):
    """The rule's threshold above the days h1's certificate has left: to the rule, the same as
    a certificate that near its end."""
    setup = monitoring
    rules = {**LAB_RULES, "certificate_days": "36500", "certificate_for": "5s"}
    try:
        setup.rules = rules
        changed = setup.deploy([setup.mon])
        assert changed.ok, changed.explain()
        reloaded_at = time.time()
        firing = mail_for(setup, "FIRING", "FlowerCertificateExpiringSoon", reloaded_at - 10)
        assert "The certificate of h1.flowerbed.test expires in" in firing["body"], firing["body"]
        print(f"\nthreshold above the days left -> mail: {mailed_at(firing) - reloaded_at:.0f} s")
        assert_one_mail("FlowerCertificateExpiringSoon", reloaded_at - 10)
    finally:
        setup.rules = dict(LAB_RULES)
        restored = setup.deploy([setup.mon])
        assert restored.ok, restored.explain()


def test_a_second_run_changes_nothing_and_shows_no_password(monitoring: Setup):
    setup = monitoring
    again = setup.deploy([DASHBOARD, setup.mon])
    assert again.ok and again.totals["success"] == 0, again.explain()
    dry = setup.deploy([setup.mon], flags=("-y", "--json", "--dry", "--diff", "-vvv"))
    assert dry.ok, dry.explain()
    assert_no_password(setup, setup.password)


def test_a_wrong_smtp_password_is_reported(monitoring: Setup):
    """The deploy goes through, Prometheus runs, the inbox refuses the login and verify.py
    reports Alertmanager's failing deliveries."""
    setup, lab, mon = monitoring, monitoring.lab, monitoring.mon
    wrong = secrets.token_urlsafe(24)
    setup.write_env(wrong)
    refused = lab_smtp.refused_logins()
    changed = setup.deploy([mon], flags=("-y", "--json", "-vvv"))
    assert changed.ok and changed.changed_hosts("SMTP login's password") == [mon]
    test_alert = json.dumps([{"labels": {"alertname": "FlowerbedDeliveryTest", "instance": "lab"}}])
    lab.ssh(
        mon,
        ["curl", "-sS", "--fail", "-XPOST", "-H", "Content-Type: application/json",
         "--data", test_alert, "http://127.0.0.1:9093/api/v2/alerts"],
        check=True,
    )  # fmt: skip
    until("refused SMTP login", lambda: lab_smtp.refused_logins() > refused, 120)
    failing = until(
        "verify run reporting failing deliveries",
        lambda: (v := setup.verify()).returncode != 0 and "delivery" in v.stdout and v,
        180,
        5,
    )
    assert "Alertmanager failed" in failing.stdout, failing.explain()
    assert setup.targets_up(), "Prometheus stopped scraping after the wrong password"
    active = lab.ssh(mon, ["systemctl", "is-active", "prometheus"]).stdout.strip()
    assert active == "active"
    assert_no_password(setup, wrong)
