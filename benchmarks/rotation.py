"""Dashboard password rotation on fresh lab hosts, while clients poll every host.

    .venv/bin/python benchmarks/rotation.py [--hosts 3]

Boots N fresh hosts (rb1..rbN) in the running lab (`make lab-up` first), deploys them, rotates
every login with rotate.py against a copy of .lab/lab.env while one client per host polls
/api/workers (switching password when the report says so) and a monitoring client polls
/healthcheck; removes the hosts. Prints the rotation's seconds and the request counts.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "lab")]  # helpers; test_rotate

from conftest import Lab  # noqa: E402
from deploy_helpers import run_deploy  # noqa: E402
from test_rotate import rotate_while_polling  # noqa: E402

LAB = ["python3", str(REPO / "lab" / "lab.py")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=3)
    args = parser.parse_args()
    names = [f"rb{i}" for i in range(1, args.hosts + 1)]
    for name in names:
        subprocess.run([*LAB, "host-up", name], check=True, capture_output=True)
    try:
        lab = Lab.load()
        deployed = run_deploy(names)
        assert deployed.ok, deployed.explain()
        with tempfile.TemporaryDirectory() as tmp:
            env_file = Path(tmp) / "lab.env"
            shutil.copy(lab.state["secrets_file"], env_file)
            measure(lab, names, env_file)
    finally:
        for name in names:
            subprocess.run([*LAB, "host-down", name], capture_output=True)


def measure(lab: Lab, names: list[str], env_file: Path) -> None:
    rotation = rotate_while_polling(lab, names, env_file)
    results = rotation.poller.results
    failed = [r for r in results if r[3] == 0 or r[3] >= 500]
    refused_new = [r for r in results if r[3] in (401, 429) and r[2] == "new"]
    print(f"hosts: {len(names)}; rotate.py exit {rotation.returncode}")
    print(f"rotation (rotate.py wall time): {rotation.seconds:.1f} s")
    print(f"requests: {len(results)} ({sum(r[1] == 'api/workers' for r in results)} /api/workers)")
    print(f"failed (5xx, refused, timeout): {len(failed)}")
    print(f"refused with the old password: {sum(r[3] in (401, 429) for r in results)}")
    print(f"refused with the new password: {len(refused_new)}")


if __name__ == "__main__":
    main()
