"""`make test`: the unit tests, then the lab's modules in shards side by side, then what must
run alone. Exits non-zero if any part failed; each shard's output is printed whole when it ends.

The lab is brought up once, before the shards (FLOWERBED_LAB_UP=1 then tells each session's
`lab` fixture to use it as it is: sessions never bring it up or rebuild it under each other).
A shard holds whole modules: "shared" those on the shared hosts h1..h3, the others those that
boot fresh hosts of their own. Modules that take the lab's shared worker or broker away for a
while (their deploys would fail the health check of a module beside them) and the lifecycle
tests (they take the whole lab down) run alone, after the shards.

    .venv/bin/python tests/run_suite.py [PYTEST_ARGS...]   # what `make test` runs
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = "tests/lab"
# Side by side, each shard in turn. Shard "shared" uses h1..h3; the others boot fresh hosts.
SHARDS = {
    "shared": [
        "test_claims.py", "test_browser.py", "test_flower.py", "test_firewall.py",
        "test_preflight.py", "test_preview.py", "test_secret_output.py", "test_doc_commands.py",
    ],
    "fresh-a": [
        "test_beside_services.py", "test_beside_sites.py", "test_own_firewall.py",
        "test_consumer.py", "test_egress.py", "test_firewall_edges.py", "test_sudo.py",
        "test_oauth.py",
    ],
    # (faults: its own broker and worker; rollout: six hosts of its own)
    "fresh-c": ["test_faults.py", "test_rabbitmq.py", "test_rollout.py"],
    "fresh-b": [
        "test_leak_scan.py", "test_remove.py", "test_beside_docker.py", "test_cookie_rotation.py",
        "test_login_ban.py", "test_edge.py", "test_inside_site.py",
    ],
    # (issue 21's: each on fresh hosts of its own)
    "fresh-d": ["test_memory_ceiling.py"],
}  # fmt: skip
# Alone, after the shards: they stop the shared worker or broker, flood it, rotate the lab's own
# logins (.lab/lab.env, which every deploy reads), or take the lab down.
ALONE = [
    "test_rotate.py", "test_verify.py", "test_alerts.py", "test_alert_delivery.py",
    "test_lab.py", "test_lab_handover.py",
]  # fmt: skip


def pytest(*args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    argv = [str(REPO / ".venv" / "bin" / "pytest"), *args]
    out = log.open("w") if log else None
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def every_lab_module_placed() -> list[str]:
    placed = {m for shard in SHARDS.values() for m in shard} | set(ALONE)
    found = {p.name for p in (REPO / LAB).glob("test_*.py")}
    return sorted(found - placed)


def main(extra: list[str]) -> int:
    if missing := every_lab_module_placed():
        print(f"tests/run_suite.py places no shard for {missing}: add each to SHARDS or ALONE")
        return 2
    started = time.monotonic()
    failed = []
    if pytest("-m", "not lab", *extra).wait():
        failed.append("unit")
    lab_up = [str(REPO / ".venv" / "bin" / "python"), "-c",
              "import sys; sys.path[:0] = ['tests', 'lab']; import conftest; "
              "conftest.lab_up(conftest.LAB_HOSTS)"]  # fmt: skip
    if subprocess.run(lab_up, cwd=REPO).returncode:
        print("the lab did not come up")
        return 1
    env = {**os.environ, "FLOWERBED_LAB_UP": "1"}
    logs = REPO / ".lab" / "suite"
    logs.mkdir(parents=True, exist_ok=True)
    running = {
        name: pytest(*(f"{LAB}/{m}" for m in modules), *extra, env=env, log=logs / f"{name}.log")
        for name, modules in SHARDS.items()
    }
    for name, process in running.items():
        code = process.wait()
        print(f"\n===== shard {name}: exit {code} =====")
        print((logs / f"{name}.log").read_text())
        if code:
            failed.append(name)
    if pytest(*(f"{LAB}/{m}" for m in ALONE), *extra).wait():
        failed.append("alone")
    minutes = (time.monotonic() - started) / 60
    print(f"\nsuite: {minutes:.1f} min; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
