"""Alerting on real lab hosts: the lab's Prometheus (lab/lab_prometheus.py) scrapes h1..h3
through nginx as a monitoring source, with monitoring/flowerbed.rules.yml and the lab's
shortened `for:` (the documented override). h3 purges offline workers after 5 s, so the
worker alert is seen to survive Flower's purge. The lab worker is put back in `finally`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import lab_worker
import pytest
from conftest import REPO, Lab
from deploy_helpers import run_deploy

pytestmark = pytest.mark.lab

HOSTS = ["h1", "h2", "h3"]
PURGING = "h3"
LAB_PROMETHEUS = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "lab" / "lab_prometheus.py")]
PROMETHEUS = "http://10.77.0.1:9090"


def deploy(host_data: dict | None = None) -> None:
    result = run_deploy(
        HOSTS,
        inventory="tests/inventories/lab.py",
        env={"FLOWERBED_TEST_HOST_DATA": json.dumps(host_data or {})},
    )
    assert result.ok, result.explain()


@pytest.fixture(scope="module")
def monitored(lab: Lab):
    deploy({PURGING: {"flower_purge_offline_workers": 5}})
    started = subprocess.run(
        [*LAB_PROMETHEUS, "up", *HOSTS], capture_output=True, text=True, timeout=120
    )
    assert started.returncode == 0, started.stderr
    try:
        wait_until(lambda: len(targets_up()) == 2 * len(HOSTS), 60, "every target up")
        yield lab
    finally:
        subprocess.run([*LAB_PROMETHEUS, "down"], timeout=60)
        deploy()  # h3 back to the defaults


def api(path: str, **params: str) -> dict:
    url = f"{PROMETHEUS}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def targets_up() -> list[str]:
    return [t["scrapeUrl"] for t in api("targets")["activeTargets"] if t["health"] == "up"]


def alerts(name: str, state: str = "firing") -> set[str]:
    """Instances (host names) for which alert `name` is in `state`."""
    return {
        a["labels"].get("instance", "").split(":")[0].split(".")[0]
        for a in api("alerts")["alerts"]
        if a["labels"]["alertname"] == name and a["state"] == state
    }


def wait_until(check, timeout: float, what: str, every: float = 1, explain=None) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            seen = f"; {explain()}" if explain else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{seen}")
        time.sleep(every)
    return time.monotonic() - started


def test_prometheus_scrapes_every_host_through_nginx(monitored: Lab):
    up = targets_up()
    for name in HOSTS:
        fqdn = monitored.host(name)["fqdn"]
        assert f"https://{fqdn}:443/metrics" in up
        assert (
            f"http://127.0.0.1:9115/probe?module=flowerbed_https&target=https%3A%2F%2F{fqdn}%2Fhealthcheck"
            in up
        )
    online = api("query", query='flower_worker_online{job="flower"}')["result"]
    assert {r["metric"]["instance"] for r in online} == {
        f"{monitored.host(n)['fqdn']}:443" for n in HOSTS
    }
    expiry = api("query", query="(probe_ssl_earliest_cert_expiry - time()) / 86400")["result"]
    assert len(expiry) == len(HOSTS) and all(float(r["value"][1]) > 14 for r in expiry)
    assert not alerts("FlowerDown") and not alerts("FlowerCertificateExpiringSoon")


def test_a_prometheus_outside_monitoring_sources_gets_403(monitored: Lab, tmp_path: Path):
    """A Prometheus in lab-allowed (may log in to the dashboard, is no monitoring source)."""
    user, password = monitored.dashboard_login
    secret = tmp_path / "password"
    secret.touch(mode=0o600)
    secret.write_text(password)
    config = {
        "global": {"scrape_interval": "2s"},
        "scrape_configs": [
            {
                "job_name": "flower",
                "scheme": "https",
                "tls_config": {"ca_file": monitored.state["acme"]["root"]},
                "basic_auth": {"username": user, "password_file": str(secret)},
                "static_configs": [{"targets": [monitored.host("h1")["fqdn"]]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    outsider = subprocess.Popen(
        [
            "ip", "netns", "exec", "lab-allowed", "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--web.listen-address=127.0.0.1:9091",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def last_error() -> str:
            probe = monitored.in_namespace(
                "lab-allowed", ["curl", "-sf", "http://127.0.0.1:9091/api/v1/targets"]
            )
            if probe.returncode != 0:
                return ""
            targets = json.loads(probe.stdout)["data"]["activeTargets"]
            return targets[0]["lastError"] if targets else ""

        wait_until(lambda: last_error(), 30, "the outsider's first scrape")
        assert "403 Forbidden" in last_error()
    finally:
        outsider.send_signal(signal.SIGTERM)
        outsider.wait(timeout=20)


def test_stopping_the_worker_fires_the_worker_alert(monitored: Lab):
    assert not alerts("CeleryWorkersMissing") and not alerts("CeleryWorkersMissing", "pending")
    try:
        lab_worker.stop_mid_task(monitored)  # a warm shutdown: the worker sends worker-offline
        seconds = wait_until(
            lambda: alerts("CeleryWorkersMissing") == set(HOSTS), 120, "CeleryWorkersMissing"
        )
        print(f"worker stopped -> CeleryWorkersMissing firing on {HOSTS}: {seconds:.0f} s")
        # Flower on h3 purged the worker's series: only the count still sees it missing
        purged = api("query", query="flower_worker_online")["result"]
        assert {r["metric"]["instance"].split(".")[0] for r in purged} == set(HOSTS) - {PURGING}
        assert alerts("CeleryWorkerOffline") == set(HOSTS) - {PURGING}
    finally:
        lab_worker.put_back(monitored, HOSTS)
    wait_until(lambda: not alerts("CeleryWorkersMissing"), 120, "the worker alert to resolve")


def test_failing_tasks_fire_the_failure_ratio_alert(monitored: Lab):
    assert not alerts("CeleryTaskFailureRatioHigh"), "the producer alone stays under 50 %"
    # not queued behind the tasks the producer piled up while the last test stopped the worker
    lab_worker.queue_drained(monitored)
    lab_worker.demo(
        monitored,
        "from flowerbed_demo.app import fail\nfor _ in range(150): fail.delay('on purpose')",
    )
    ratio = "sum by (instance) (rate(flower_events_total{type='task-failed'}[1m]))"
    seconds = wait_until(
        lambda: alerts("CeleryTaskFailureRatioHigh") == set(HOSTS),
        180,
        "the failure alert",
        explain=lambda: (
            f"pending: {alerts('CeleryTaskFailureRatioHigh', 'pending')}, "
            f"failed/s: {api('query', query=ratio)['result']}"
        ),
    )
    print(f"150 failing tasks sent -> CeleryTaskFailureRatioHigh firing: {seconds:.0f} s")
