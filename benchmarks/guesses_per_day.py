"""Guesses per day one source (an IPv4 address, or an IPv6 /64) can make at the login, from the
settings alone: before the ban (issue 19) and with it.

    .venv/bin/python benchmarks/guesses_per_day.py [--data key=value ...]

Before: nginx throttled failed logins per address, but a failure past that limit still told the
guesser "wrong" (429), and every request paid its bcrypt check first; only
flower_nginx_requests_per_second capped the guesses, per address, so an IPv6 /64 (2^64
addresses) had no cap at all. With the ban: a source gets flower_nginx_ban_failures guesses,
plus what it fits in while fail2ban reads the log (LATENCY seconds: at most the request burst
and rate), then flower_nginx_ban_seconds of nothing; a /64 counts as one source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.settings_helpers import settings_with  # noqa: E402

DAY = 86400
LATENCY = 1.0  # seconds from a failed login's log line to the ban (fail2ban polls each second)


def before(nginx) -> float:
    return nginx.requests_per_second * DAY


def after(nginx) -> float:
    rate = nginx.requests_per_second
    per_cycle = nginx.ban_failures + min(nginx.requests_burst + rate * LATENCY, rate * DAY)
    cycle = nginx.ban_failures / rate + LATENCY + nginx.ban_seconds
    return DAY / cycle * per_cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=[], help="key=value (int)")
    args = parser.parse_args()
    overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.data)}
    nginx = settings_with(**overrides).nginx
    print(f"before: one address {before(nginx):,.0f} guesses/day; one IPv6 /64 unlimited "
          f"({before(nginx):,.0f} per address x 2^64 addresses)")  # fmt: skip
    print(f"after:  one source {after(nginx):,.0f} guesses/day; one IPv6 /64 the same "
          f"(ban after {nginx.ban_failures} failures in {nginx.ban_window_seconds} s, "
          f"for {nginx.ban_seconds} s)")  # fmt: skip


if __name__ == "__main__":
    main()
