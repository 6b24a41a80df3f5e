"""Lab timings and memory: cold and warm `lab up`, no-op `lab up`, PSS per idle host.

    sudo .venv/bin/python benchmarks/lab_times.py [--hosts 3] [--cold]

Tears the lab down first (never run it while others use the lab). --cold builds the base
image into a temporary cache as well (about a minute), so the cached one is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = ["python3", str(REPO / "lab" / "lab.py")]


def timed(args: list[str], env: dict | None = None) -> float:
    started = time.monotonic()
    subprocess.run(args, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.monotonic() - started


def pss_kib(cgroup: Path) -> int:
    total = 0
    for procs in cgroup.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            total += next(
                int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")
            )
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    args = parser.parse_args()
    hosts = ["up", "--hosts", str(args.hosts)]
    results = {}
    if args.cold:
        subprocess.run([*LAB, "down"], check=True, capture_output=True)
        with tempfile.TemporaryDirectory(dir="/var/tmp") as cache:
            results["cold_up_s"] = timed([*LAB, *hosts], {"FLOWERBED_LAB_CACHE": cache})
            subprocess.run([*LAB, "down"], check=True, capture_output=True)
    subprocess.run([*LAB, "down"], check=True, capture_output=True)
    results["warm_up_s"] = timed([*LAB, *hosts])
    results["noop_up_s"] = timed([*LAB, *hosts])
    time.sleep(5)  # let boot-time services settle
    state = json.loads((REPO / ".lab" / "state.json").read_text())
    per_host = {
        h["name"]: pss_kib(Path(f"/sys/fs/cgroup/unified/flowerbed-lab-{h['name']}"))
        for h in state["hosts"]
    }
    results["pss_per_host_mib"] = {k: round(v / 1024, 1) for k, v in per_host.items()}
    for key, value in results.items():
        print(f"{key}: {value if isinstance(value, dict) else round(value, 2)}")


if __name__ == "__main__":
    main()
