#!/usr/bin/env python3
"""Render flowerbed's Prometheus alerting rules with your thresholds.

    python3 monitoring/render_rules.py          # the defaults: = flowerbed.rules.yml
    python3 monitoring/render_rules.py --set expected_workers=4 --set failure_ratio=0.02 \
        -o /etc/prometheus/rules/flowerbed.rules.yml

`flowerbed.rules.yml` beside this script is the rendering with the defaults below, ready to
load as it is. Check a rendering with `promtool check rules FILE`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).resolve().parent
TEMPLATE = "flowerbed.rules.yml.j2"
RULES = HERE / "flowerbed.rules.yml"

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
    "prefetch_seconds": "60",  # alert when tasks waited longer at a worker before starting
    "prefetch_window": "5m",
    "prefetch_for": "10m",
    "flower_down_for": "5m",  # Flower unscrapeable, no targets, or the HTTPS probe failing
    "certificate_days": "14",  # alert when the served certificate expires sooner (certbot: 30)
    "certificate_for": "1h",
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
    env = Environment(
        loader=FileSystemLoader(HERE),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    described = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return env.get_template(TEMPLATE).render({**DEFAULTS, **overrides, "overrides": described})


def parse_sets(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set failure_ratio=0.1")
        overrides[key.strip()] = value.strip()
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    parser.add_argument("--list", action="store_true", help="print the thresholds and defaults")
    args = parser.parse_args(argv)
    if args.list:
        for key, value in DEFAULTS.items():
            print(f"{key}={value}")
        return 0
    try:
        text = render(parse_sets(args.set))
    except ValueError as error:
        print(f"render_rules: {error}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
