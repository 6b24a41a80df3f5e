"""Deploy timings on fresh lab hosts: first deploy, no-op run, and operations per host.

    .venv/bin/python benchmarks/deploy_times.py [--hosts 3] [--distro bookworm]

Boots N fresh hosts (b1..bN) in the running lab (`make lab-up` first), runs the whole deploy
twice and removes the hosts. Prints seconds and the --json totals of each run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from deploy_helpers import run_deploy  # noqa: E402

LAB = ["python3", str(REPO / "lab" / "lab.py")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--distro", default="bookworm", choices=("bookworm", "trixie"))
    args = parser.parse_args()
    names = [f"bench{i}" for i in range(1, args.hosts + 1)]
    for name in names:
        subprocess.run([*LAB, "host-up", name, "--distro", args.distro], check=True)
    try:
        for run in ("first deploy", "no-op run"):
            result = run_deploy(names)
            if not result.ok:
                sys.exit(result.explain())
            totals = result.totals
            print(
                f"{run}: {result.seconds:.1f} s for {len(names)} {args.distro} hosts "
                f"(changed {totals['success']}, unchanged {totals['no_change']}, "
                f"errors {totals['error']})"
            )
    finally:
        for name in names:
            subprocess.run([*LAB, "host-down", name], check=True)


if __name__ == "__main__":
    main()
