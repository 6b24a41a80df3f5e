"""What the lab's on-demand services cost: start time and memory (PSS) of RabbitMQ (with its
demo worker) and of Prometheus (with the blackbox exporter), and a no-op `lab up` beside them.

    .venv/bin/python benchmarks/lab_services.py   # as root, while nothing else uses the lab

Needs a running lab (`make lab-up`); stops each service first, starts it timed, measures, and
leaves it stopped again (both are started only by the tests that need them).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / ".lab" / "run"
PYTHON = str(REPO / ".venv" / "bin" / "python")
SERVICES = {
    "rabbitmq": ([PYTHON, "lab/lab_rabbitmq.py"], ["rabbitmq", "rabbitmq-epmd", "rabbitmq-worker"]),
    "prometheus": ([PYTHON, "lab/lab_prometheus.py"], ["prometheus", "blackbox"]),
}


def timed(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(args, check=True, capture_output=True, cwd=REPO)
    return time.monotonic() - started


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def pss_mib(names: list[str]) -> float:
    """PSS of the lab processes `names` (by PID file) and all their descendants."""
    tree = children()
    todo = [
        int((RUN / f"{name}.pid").read_text()) for name in names if (RUN / f"{name}.pid").exists()
    ]
    total = 0
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += next(
            int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")
        )
    return round(total / 1024, 1)


def main() -> None:
    results = {"lab_up_noop_s": round(timed(["python3", "lab/lab.py", "up"]), 1)}
    for service, (cli, processes) in SERVICES.items():
        subprocess.run([*cli, "down"], check=True, capture_output=True, cwd=REPO)
        results[f"{service}_start_s"] = round(timed([*cli, "up"]), 1)
        time.sleep(20)  # settled: the worker connected, the first scrapes and probes done
        results[f"{service}_pss_mib"] = pss_mib(processes)
        subprocess.run([*cli, "down"], check=True, capture_output=True, cwd=REPO)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
