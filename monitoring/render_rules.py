#!/usr/bin/env python3
"""Render flowerbed's Prometheus alerting rules with your thresholds.

    .venv/bin/python monitoring/render_rules.py          # the defaults: = flowerbed.rules.yml
    .venv/bin/python monitoring/render_rules.py --list   # every threshold and its default
    .venv/bin/python monitoring/render_rules.py --set expected_workers=4 --set failure_ratio=0.02 \
        -o /etc/prometheus/flowerbed.rules.yml

It needs the project's venv (`make setup`: jinja2).

`flowerbed.rules.yml` beside this script is the rendering with the defaults
(flowerbed/alert_rules.py), ready to load as it is. Check a rendering with
`promtool check rules FILE`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE / "flowerbed.rules.yml"
if str(HERE.parent) not in sys.path:  # flowerbed's package, beside this directory
    sys.path.insert(0, str(HERE.parent))

# the thresholds, their checks and the template live in the package (the monitoring part
# renders them too): this script is their command line
from flowerbed.alert_rules import DEFAULTS, check_value, render  # noqa: E402

__all__ = ["DEFAULTS", "RULES", "check_value", "main", "parse_sets", "render"]


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
