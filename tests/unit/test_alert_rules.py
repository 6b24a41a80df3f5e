"""The Prometheus rules (monitoring/): they load as they are and each alert fires on its case.

Runs Debian's promtool (package `prometheus`, in the Makefile's MACHINE_PACKAGES): a missing
promtool is a failure, never a skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
sys.path.insert(0, str(MONITORING))

import render_rules  # noqa: E402

RULES = MONITORING / "flowerbed.rules.yml"
ALERTS = [
    "CeleryWorkersMissing",
    "CeleryWorkerOffline",
    "CeleryTaskFailureRatioHigh",
    "CeleryTasksSlow",
    "CeleryTaskStuck",
    "CeleryTasksWaitingLong",
    "FlowerDown",
    "FlowerTargetsMissing",
    "FlowerCertificateExpiringSoon",
    "FlowerProbeFailed",
    "FlowerMemoryNearCeiling",
    "FlowerRestartedAtMemoryCeiling",
]


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make machine-packages` installs Debian's prometheus"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_the_shipped_rules_load_as_they_are():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    assert RULES.read_text().startswith("# flowerbed") and "\ngroups:\n" in RULES.read_text()


def test_the_shipped_rules_are_the_defaults_rendering():
    assert RULES.read_text() == render_rules.render(), (
        "monitoring/flowerbed.rules.yml is stale: run `.venv/bin/python monitoring/render_rules.py "
        "-o monitoring/flowerbed.rules.yml`"
    )


def test_every_alert_fires_in_promtools_unit_tests():
    tests = sorted((MONITORING / "tests").glob("*.test.yml"))
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr
    text = "".join(t.read_text() for t in tests)
    for alert in ALERTS:
        assert f"alertname: {alert}\n        exp_alerts:\n          - exp_labels" in text, alert


def test_overridden_thresholds_render_and_load(tmp_path: Path):
    text = render_rules.render(
        {"expected_workers": "3", "workers_missing_for": "15s", "failure_ratio": "0.5"}
    )
    assert "< 3\n        for: 15s" in text and ") > 0.5\n" in text
    assert "# Overrides: expected_workers=3, workers_missing_for=15s" in text
    (tmp_path / "rules.yml").write_text(text)
    result = promtool("check", "rules", str(tmp_path / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("failure_ratio", "5%", "failure_ratio='5%': must be a non-negative number"),
        ("workers_missing_for", "5 minutes", "must be a Prometheus duration"),
        ("expected_worker", "2", "expected_worker: unknown threshold"),
        ("slow_task_seconds", "10", 'use "10.0"'),
        ("job", 'x"} or vector(1', "must be a job name"),
    ],
)
def test_bad_thresholds_are_refused_with_the_fix(key: str, value: str, message: str):
    with pytest.raises(ValueError) as error:
        render_rules.render({key: value})
    assert message in str(error.value)


def test_the_cli_lists_defaults_and_names_a_bad_key():
    script = [sys.executable, str(MONITORING / "render_rules.py")]
    listing = subprocess.run([*script, "--list"], capture_output=True, text=True, check=True)
    assert "expected_workers=1\n" in listing.stdout
    bad = subprocess.run([*script, "--set", "failure_ratio"], capture_output=True, text=True)
    assert bad.returncode == 2 and "write KEY=VALUE" in bad.stderr


def test_the_scrape_example_is_valid_prometheus_config():
    result = promtool("check", "config", "--syntax-only", "prometheus.example.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    blackbox = shutil.which("prometheus-blackbox-exporter")
    assert blackbox, "prometheus-blackbox-exporter is missing: `make machine-packages`"
    checked = subprocess.run(
        [blackbox, "--config.check", "--config.file=blackbox.example.yml"],
        capture_output=True,
        text=True,
        cwd=MONITORING,
    )
    assert checked.returncode == 0, checked.stderr
