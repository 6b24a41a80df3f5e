"""flowerbed's Prometheus alerting rules, rendered with the operator's thresholds.

The template is templates/flowerbed.rules.yml.j2 (shipped in the package);
monitoring/render_rules.py is its command line, and the monitoring part (flowerbed/monitoring.py)
renders it with flower_monitoring_rules. `render()` with no overrides is
monitoring/flowerbed.rules.yml.
"""

from __future__ import annotations

import re

from .render import render as render_template

TEMPLATE = "flowerbed.rules.yml.j2"

# Every threshold with its default: the one place they are defined.
DEFAULTS: dict[str, str] = {
    "job": "flower",  # scrape job reading Flower's /metrics (prometheus.example.yml)
    "probe_job": "flower-tls",  # scrape job of the blackbox exporter's HTTPS probe
    "expected_workers": "1",  # online workers each Flower must see (CeleryWorkersMissing)
    "workers_missing_for": "5m",  # how long workers may be missing/offline before alerting
    "failure_window": "10m",  # window of the task failure ratio
    "failure_ratio": "0.05",  # alert above this share of failed tasks (0.05 = 5 %)
    "failure_min_tasks": "10",  # ... when at least this many tasks finished in the window
    "failure_for": "10m",
    "slow_task_seconds": "10.0",  # a task is slow above this: one of Flower's runtime buckets
    "slow_task_ratio": "0.1",  # alert when more than this share of a task's runs are slow
    "slow_window": "30m",
    "slow_for": "15m",
    "stuck_after": "30m",  # a task run not finished this long after it started is stuck
    "stuck_for": "5m",
    "prefetch_seconds": "60",  # alert when tasks waited longer at a worker before starting
    "prefetch_window": "5m",
    "prefetch_for": "10m",
    "flower_down_for": "5m",  # Flower unscrapeable, no targets, or the HTTPS probe failing
    "certificate_days": "14",  # alert when the served certificate expires sooner (certbot: 30)
    "certificate_for": "1h",
    "memory_near_ratio": "0.8",  # resident memory over this share of the ceiling (the watchdog
    "memory_near_for": "10m",  # restarts Flower at 0.9: flowerbed/memory.py)
    "memory_restart_window": "1h",  # a restart at the ceiling alerts this long
}

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
NUMBER = re.compile(r"^\d+(\.\d+)?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def check_value(key: str, value: str) -> str:
    """A clear error naming the key, the problem and the fix, before anything is written."""
    if key not in DEFAULTS:
        raise ValueError(f"{key}: unknown threshold; known: {', '.join(DEFAULTS)}")
    default = DEFAULTS[key]
    if DURATION.match(default):
        pattern, kind = DURATION, "a Prometheus duration such as 30s, 5m or 1h"
    elif NUMBER.match(default):
        pattern, kind = NUMBER, "a non-negative number such as 0.05 or 10"
    else:
        pattern, kind = LABEL_VALUE, "a job name (letters, digits, _ . : -)"
    if not pattern.match(value):
        raise ValueError(f"{key}={value!r}: must be {kind}")
    if key == "slow_task_seconds" and "." not in value:
        raise ValueError(
            f"slow_task_seconds={value!r}: Prometheus' client writes bucket bounds as floats, "
            f'use "{value}.0"'
        )
    return value


def render(overrides: dict[str, str] | None = None) -> str:
    overrides = {key: check_value(key, str(v)) for key, v in (overrides or {}).items()}
    described = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return render_template(TEMPLATE, **{**DEFAULTS, **overrides, "overrides": described})
