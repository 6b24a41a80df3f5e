"""What a login costs: bcrypt per check, and /api/workers latency through nginx per bcrypt cost.

    .venv/bin/python benchmarks/login_latency.py [--requests 100] [--costs 8,10,12]

With basic auth nginx checks the password of every request (there is no session), so the
dashboard's polling pays one bcrypt check per request. This boots a fresh lab host
(`make lab-up` first), deploys it, adds one throw-away login per bcrypt cost to its htpasswd,
and times GET /api/workers from the lab machine over one keep-alive connection per login, as a
browser polls. /healthcheck (no login from the lab machine) is the baseline without bcrypt.
Prints the time of one check per cost on this machine, then p50/p95/max per login.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import secrets
import shlex
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bcrypt

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from deploy_helpers import run_deploy  # noqa: E402

from flowerbed.auth import BCRYPT_ROUNDS, HTPASSWD  # noqa: E402

LAB = ["python3", str(REPO / "lab" / "lab.py")]
HOST = "benchlogin"


def check_seconds(cost: int, rounds: int = 5) -> float:
    """One bcrypt check at `cost`, on this machine (the lab hosts share its cores)."""
    password = secrets.token_urlsafe(24).encode()
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(cost))
    started = time.perf_counter()
    for _ in range(rounds):
        bcrypt.checkpw(password, hashed)
    return (time.perf_counter() - started) / rounds


def timings(host: dict, ca: str, path: str, auth: str | None, requests: int) -> list[float]:
    """Seconds per GET over one keep-alive connection (the first request warms it up)."""
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection(host["fqdn"], 443, context=context, timeout=30)
    headers = {"Authorization": f"Basic {auth}"} if auth else {}
    seconds = []
    for _ in range(requests + 1):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"GET {path}: {response.status}")
        seconds.append(time.perf_counter() - started)
        # stay under the per-source request limit (flower_nginx_requests_per_second)
        time.sleep(0.25)
    connection.close()
    return seconds[1:]


def summary(seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = statistics.quantiles(ms, n=20)[-1]
    return f"p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  max {ms[-1]:6.1f} ms"


def add_logins(name: str, costs: list[int]) -> dict[int, str]:
    """A throw-away login per cost on the host: {cost: base64 'user:password'}."""
    logins, lines = {}, []
    for cost in costs:
        user, password = f"bench-cost{cost}", secrets.token_urlsafe(24)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
        lines.append(f"{user}:{hashed}")
        logins[cost] = base64.b64encode(f"{user}:{password}".encode()).decode()
    script = f"cat >> {shlex.quote(HTPASSWD)}"
    subprocess.run(
        [*LAB, "ssh", name, script], input="\n".join(lines) + "\n", text=True, check=True
    )
    return logins


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--costs", default="8,10,12")
    args = parser.parse_args()
    costs = [int(cost) for cost in args.costs.split(",")]

    print(f"flowerbed's bcrypt cost: {BCRYPT_ROUNDS}")
    for cost in costs:
        print(f"bcrypt check at cost {cost:2}: {check_seconds(cost) * 1000:7.1f} ms")

    subprocess.run([*LAB, "host-up", HOST], check=True, capture_output=True)
    try:
        result = run_deploy([HOST])
        if not result.ok:
            sys.exit(result.explain())
        state = json.loads((REPO / ".lab" / "state.json").read_text())
        host = next(h for h in state["hosts"] if h["name"] == HOST)
        ca = state["acme"]["root"]
        logins = add_logins(HOST, costs)
        print(f"GET /api/workers through nginx, {args.requests} polls each, one connection:")
        baseline = timings(host, ca, "/healthcheck", None, args.requests)
        print(f"  /healthcheck, no login (baseline): {summary(baseline)}")
        for cost, auth in logins.items():
            seconds = timings(host, ca, "/api/workers", auth, args.requests)
            print(f"  /api/workers, login at cost {cost:2}:   {summary(seconds)}")
    finally:
        subprocess.run([*LAB, "host-down", HOST], check=True, capture_output=True)


if __name__ == "__main__":
    main()
