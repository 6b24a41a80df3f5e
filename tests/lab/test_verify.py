"""The verify run (verify.py): every layer of every host, reported, changing nothing.

Two shared hosts (h1, h2), deployed as every lab test deploys them. Each test breaks one thing
(a host's nginx, its firewall, the lab's worker, the tasks it runs), reads the fleet's table
and JSON summary, and puts the thing back in a `finally`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import lab_worker
import pytest
from conftest import Lab
from deploy_helpers import DeployResult, run_deploy
from polling import until

pytestmark = pytest.mark.lab

HOSTS = ["h1", "h2"]
WORKER = "demo@labmachine"
STUCK_AFTER = 20  # flower_verify_max_task_seconds for the stuck task's test
PRODUCER_LONGEST_TASK = 30  # seconds: the demo producer's longest sleep task (lab/demo_app)
TASK_SECONDS = 120  # the stuck task's own sleep: STARTED for the whole test
LAYERS = {
    "unit", "socket", "nginx", "nginx_config", "https", "certificate", "renewal", "firewall",
    "sandbox", "state", "memory", "workers", "failed_tasks", "stuck_tasks", "queues", "registered",
    "login_ban",
}  # fmt: skip


@pytest.fixture(scope="module")
def fleet(lab: Lab) -> list[str]:
    assert all(name in {h["name"] for h in lab.base_hosts} for name in HOSTS)
    result = run_deploy(HOSTS)
    assert result.ok, result.explain()
    return HOSTS


class Verified:
    def __init__(self, result: DeployResult, summary: dict):
        self.result, self.summary = result, summary

    @property
    def ok(self) -> bool:
        return self.result.ok

    def layer(self, name: str, layer: str) -> dict:
        return self.summary["hosts"][name]["layers"][layer]

    def failing(self, name: str) -> set[str]:
        layers = self.summary["hosts"][name]["layers"]
        return {key for key, verdict in layers.items() if not verdict["ok"]}

    def row(self, name: str) -> str:
        return next(line for line in self.result.stdout.splitlines() if line.startswith(name + " "))


# The lab's Flowers remember the shared worker's failures (every test's, and an earlier suite's
# within the hour): only the test of that limit sets one of its own.
UNCOUNTED = {"flower_verify_max_failed_tasks": 10**6}


def verify(names: list[str], tmp_path: Path, data: dict | None = None) -> Verified:
    summary = tmp_path / "verify.json"
    summary.unlink(missing_ok=True)
    result = run_deploy(
        names,
        {"flower_verify_summary_file": str(summary), **UNCOUNTED, **(data or {})},
        flags=("-y",),
        deploy_file="verify.py",
    )
    assert summary.exists(), result.explain()
    verified = Verified(result, json.loads(summary.read_text()))
    assert set(verified.summary["hosts"]) == set(names)
    assert verified.summary["ok"] == result.ok, "the exit status follows the summary"
    return verified


def test_a_healthy_fleet_reports_every_layer_and_changes_nothing(fleet, tmp_path: Path):
    verified = verify(fleet, tmp_path)
    assert verified.ok, verified.result.explain()
    assert "Grand total" in verified.result.log and not re.search(
        r"\] +Success", verified.result.log
    )
    for name in fleet:
        assert set(verified.summary["hosts"][name]["layers"]) == LAYERS
        assert verified.failing(name) == set()
        assert verified.row(name).endswith("OK")
        assert verified.layer(name, "workers")["value"].startswith(("1/", "2/"))
        assert verified.layer(name, "sandbox")["value"] <= 1.5
        assert verified.layer(name, "certificate")["value"] >= 14
    assert verified.result.stdout.splitlines()[1].startswith("host ")


def test_a_broken_firewall_and_certificate_are_reported_with_every_other_layer(
    lab: Lab, fleet, tmp_path: Path
):
    broken = fleet[0]
    lab.ssh(broken, "nft delete table inet flowerbed", check=True)
    try:
        # the lab's certificates last 5 years: expecting 10 makes this one "about to expire"
        verified = verify(fleet, tmp_path, {"flower_verify_cert_min_days": 3650})
        assert not verified.ok
        assert verified.failing(broken) == {"firewall", "certificate"}
        assert "no flowerbed table is loaded" in verified.layer(broken, "firewall")["problem"]
        assert "under 3650" in verified.layer(broken, "certificate")["problem"]
        assert verified.layer(broken, "workers")["ok"], "layers after a failing one are checked"
        assert verified.failing(fleet[1]) == {"certificate"}
        assert verified.layer(fleet[1], "firewall")["ok"]
        assert re.search(rf"\[{broken}\] +firewall: no flowerbed table", verified.result.log)
    finally:
        restored = run_deploy([broken])
        assert restored.ok, restored.explain()
    assert verify(fleet, tmp_path).ok


def test_a_stopped_nginx_fails_only_its_host_and_flowers_health_is_still_reported(
    lab: Lab, fleet, tmp_path: Path
):
    stopped, other = fleet
    lab.ssh(stopped, "systemctl stop nginx", check=True)
    try:
        verified = verify(fleet, tmp_path)
        assert not verified.ok
        assert {"nginx", "https"} <= verified.failing(stopped)
        assert verified.layer(stopped, "socket")["ok"], "Flower's own health is still reported"
        assert verified.layer(stopped, "unit")["ok"]
        assert verified.layer(stopped, "firewall")["ok"]
        assert verified.failing(other) == set(), "the other host is fine"
        assert verified.row(other).endswith("OK") and verified.row(stopped).endswith("PROBLEM")
        assert re.search(rf"\[{stopped}\] +nginx: nginx is not running", verified.result.log)
    finally:
        lab.ssh(stopped, "systemctl start nginx", check=True)
    assert verify(fleet, tmp_path).ok


def test_a_never_deployed_host_is_reported_beside_a_healthy_one(fleet, fresh_host, tmp_path):
    never = fresh_host()["name"]
    verified = verify([fleet[0], never], tmp_path)
    assert not verified.ok
    assert {"unit", "socket", "nginx", "https", "firewall"} <= verified.failing(never)
    assert verified.failing(fleet[0]) == set()


# --- the monitoring practices, through Flower's API -------------------------------------------


def demo(code: str) -> str:
    """Run Python with the lab's demo app on this machine (a client of the lab's broker)."""
    return lab_worker.demo(Lab.load(), code)


def test_a_stopped_worker_is_reported_offline(lab: Lab, fleet, tmp_path: Path):
    try:
        lab_worker.stop_mid_task(lab)  # the lab's own worker, in a warm shutdown
        verified = until(
            lambda: (v := verify(fleet, tmp_path)) and "workers" in v.failing(fleet[0]) and v,
            60,
            "Flower to see the worker go",
            every=2,
        )
        for name in fleet:
            problem = verified.layer(name, "workers")["problem"]
            assert "0 worker(s) online" in problem and f"offline: {WORKER}" in problem
            assert verified.layer(name, "socket")["ok"]
    finally:
        lab_worker.put_back(lab, fleet)
    until(lambda: verify(fleet, tmp_path).ok, 60, "the worker to be back", every=2)


def test_failed_tasks_over_the_threshold(fleet, tmp_path: Path):
    counted = verify(fleet, tmp_path)
    before = {name: counted.layer(name, "failed_tasks")["value"] for name in fleet}
    limit = max(before.values()) + 25
    threshold = {"flower_verify_max_failed_tasks": limit}
    assert verify(fleet, tmp_path, threshold).ok
    burst = limit - min(before.values()) + 25  # enough to put every host over the limit
    demo(f"from flowerbed_demo.app import fail\nfor _ in range({burst}): fail.delay('verify test')")
    verified = until(
        lambda: (
            (v := verify(fleet, tmp_path, threshold))
            and all("failed_tasks" in v.failing(n) for n in fleet)
            and v
        ),
        90,
        "the failures to reach Flower",
        every=2,
    )
    for name in fleet:
        assert verified.failing(name) == {"failed_tasks"}
        assert f"more than {limit}" in verified.layer(name, "failed_tasks")["problem"]


def test_a_long_task_stuck_in_started(fleet, tmp_path: Path):
    task = demo(f"from flowerbed_demo.app import sleep\nprint(sleep.delay({TASK_SECONDS}).id)")
    limit = {"flower_verify_max_task_seconds": STUCK_AFTER}
    try:
        # deliberately waiting out two thresholds in time: the task counts as stuck only once
        # STARTED more than flower_verify_max_task_seconds ago, and verify names the oldest
        # stuck tasks first, so it is named only once the demo producer's own sleep tasks that
        # started before it have ended (PRODUCER_LONGEST_TASK)
        time.sleep(max(STUCK_AFTER, PRODUCER_LONGEST_TASK) + 5)
        verified = until(
            lambda: (v := verify(fleet, tmp_path, limit)) and task in str(v.summary) and v,
            60,
            "the task to count as stuck",
            every=2,
        )
        for name in fleet:
            assert "stuck_tasks" in verified.failing(name)
            assert task in verified.layer(name, "stuck_tasks")["problem"]
    finally:
        demo(
            "from flowerbed_demo.app import app\n"
            f"app.control.revoke({task!r}, terminate=True)"
        )  # fmt: skip


def test_expected_tasks_must_be_registered_by_an_online_worker(fleet, tmp_path: Path):
    present = {"flower_verify_expected_tasks": ["flowerbed_demo.add", "flowerbed_demo.fail"]}
    verified = verify(fleet, tmp_path, present)
    assert verified.ok, verified.result.explain()
    assert verified.layer(fleet[0], "registered")["value"] == "2/2"
    missing = {"flower_verify_expected_tasks": ["flowerbed_demo.add", "billing.charge"]}
    verified = verify(fleet, tmp_path, missing)
    for name in fleet:
        assert verified.failing(name) == {"registered"}
        assert "billing.charge" in verified.layer(name, "registered")["problem"]
