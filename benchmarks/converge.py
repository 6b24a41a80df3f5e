"""What a converge that changes nothing costs (issue 10), on the lab's own fresh hosts.

    .venv/bin/python benchmarks/converge.py [--runs 5] [--distro bookworm]   # make bench-converge

Boots 10 fresh hosts (cv1..cv10) in the running lab (`make lab-up` first; the shared hosts h1..h3
are not touched, so it needs no lab lock), times the first converge of 3 of them to serving
HTTPS, converges the rest, then times no-op runs of the whole deploy on 1, 3 and 10 hosts, each
beside a one-operation deploy on the same hosts (benchmarks/deploys/one_operation.py: pyinfra's
start, inventory, connect and one fact). Prints medians: wall time, the ratios, the controller's
CPU (pyinfra's user + system time) and its cost per added host, operations and facts per host
(pyinfra's --json results and its `-v` "Loaded fact" lines), and the 10 slowest operations of a
1-host no-op (from the times pyinfra logs "Starting operation"). Removes its hosts at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import LAB_CLI, Lab, lab_cli, run  # noqa: E402
from deploy_helpers import ANSI, DeployResult, deploy_args, deploy_env, run_deploy  # noqa: E402

from flowerbed.probe import https_get  # noqa: E402

SIZES = (1, 3, 10)
NAMES = [f"cv{i}" for i in range(1, max(SIZES) + 1)]
BASELINE = "benchmarks/deploys/one_operation.py"
OPERATION_START = re.compile(r"^--> Starting operation: (?P<name>.+?)\s*$")
LOADED_FACT = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+Loaded fact (?P<fact>\S+)")
# issue 10's goals
GOAL_NOOP_3 = 4.0
GOAL_RATIO_3 = 3.5
GOAL_CPU_PER_HOST = 0.25
GOAL_SCALE_10 = 1.3


@dataclass
class Timed:
    """One pyinfra run: its result, the CPU it used, and its log lines with their times."""

    result: DeployResult
    cpu: float
    machine_cpu: float  # every core's busy time during the run: pyinfra's and the lab hosts'
    lines: list[tuple[float, str]]

    @property
    def seconds(self) -> float:
        return self.result.seconds

    def operation_times(self) -> dict[str, float]:
        """Seconds from each operation's start to the next one's (the last: to the exit)."""
        starts = [(at, m["name"]) for at, line in self.lines if (m := OPERATION_START.match(line))]
        ends = [at for at, _ in starts[1:]] + [self.seconds]
        return {name: end - at for (at, name), end in zip(starts, ends, strict=True)}

    def until_first_operation(self) -> float:
        return next(at for at, line in self.lines if OPERATION_START.match(line))

    def facts_by_operation(self) -> dict[str, Counter]:
        """Facts loaded (`-v`) per operation ('(prepare)' before the first) per host."""
        current, found = "(prepare)", defaultdict(Counter)
        for _, line in self.lines:
            if started := OPERATION_START.match(line):
                current = started["name"]
            elif fact := LOADED_FACT.match(line):
                found[current][fact["host"]] += 1
        return found


def timed_deploy(names: list[str], deploy_file: str = "deploy.py", verbose: bool = False) -> Timed:
    """run_deploy's command, with each log line's time and the run's CPU (os.wait4)."""
    flags = ("-y", "--json", "-v") if verbose else ("-y", "--json")
    args = deploy_args(names, flags=flags, deploy_file=deploy_file)
    busy_before = machine_busy_seconds()
    started = time.monotonic()
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=deploy_env()
    )
    lines: list[tuple[float, str]] = []

    def read_log() -> None:
        for line in process.stderr:
            lines.append((time.monotonic() - started, ANSI.sub("", line)))

    reader = threading.Thread(target=read_log)
    reader.start()
    stdout = process.stdout.read()
    reader.join()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    machine_cpu = machine_busy_seconds() - busy_before
    process.returncode = os.waitstatus_to_exitcode(status)
    log = "".join(line for _, line in lines)
    result = DeployResult(args, process.returncode, stdout, log, seconds)
    return Timed(result, usage.ru_utime + usage.ru_stime, machine_cpu, lines)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat): the lab's hosts run on
    this machine's cores, so their share of a run shows here and not in pyinfra's own CPU."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def no_op(names: list[str], deploy_file: str = "deploy.py", verbose: bool = False) -> Timed:
    run = timed_deploy(names, deploy_file, verbose)
    totals = run.result.totals if run.result.ok else {}
    if not run.result.ok or totals["success"] or totals["error"]:
        sys.exit(f"not a no-op run ({totals}):\n{run.result.explain()}")
    return run


def first_converge(lab: Lab, names: list[str]) -> DeployResult:
    """The whole deploy on fresh hosts, then each must serve the dashboard over HTTPS."""
    result = run_deploy(names)
    if not result.ok:
        sys.exit(result.explain())
    for name in names:
        answer = https_get(
            lab.host(name)["fqdn"], "/healthcheck", ca_bundle=lab.state["acme"]["root"]
        )
        if answer.status != 200:
            sys.exit(f"{name} does not serve HTTPS after its first converge: {answer}")
    return result


def median(values) -> float:
    return statistics.median(values)


def goal(ok: bool) -> str:
    return "met" if ok else "MISSED"


def measure(lab: Lab, runs: int) -> None:
    first = first_converge(lab, NAMES[:3])
    print(f"first converge of 3 fresh hosts to serving HTTPS: {first.seconds:.1f} s")
    rest = first_converge(lab, NAMES[3:])
    print(f"first converge of the other {len(NAMES) - 3} hosts: {rest.seconds:.1f} s")
    no_op(NAMES)  # settle: every host converged once more, caches warm

    noops: dict[int, list[Timed]] = defaultdict(list)
    baselines: dict[int, list[Timed]] = defaultdict(list)
    for _ in range(runs):  # interleaved, so load from others hits both alike
        for size in SIZES:
            baselines[size].append(no_op(NAMES[:size], BASELINE))
            noops[size].append(no_op(NAMES[:size]))
    verbose = no_op(NAMES[:1], verbose=True)

    wall = {size: median(r.seconds for r in noops[size]) for size in SIZES}
    base = {size: median(r.seconds for r in baselines[size]) for size in SIZES}
    cpu = {size: median(r.cpu for r in noops[size]) for size in SIZES}
    base_cpu = {size: median(r.cpu for r in baselines[size]) for size in SIZES}
    machine = {size: median(r.machine_cpu for r in noops[size]) for size in SIZES}
    print(f"\nno-op converge, median of {runs} (one-operation deploy on the same hosts beside it):")
    print("hosts   no-op s   baseline s   ratio   CPU s   baseline CPU s   machine CPU s")
    for size in SIZES:
        print(
            f"{size:>5}   {wall[size]:>7.2f}   {base[size]:>10.2f}"
            f"   {wall[size] / base[size]:>5.2f}   {cpu[size]:>5.2f}   {base_cpu[size]:>14.2f}"
            f"   {machine[size]:>13.2f}"
        )
    largest = max(SIZES)
    cpu_per_host = (cpu[largest] - cpu[1]) / (largest - 1)
    machine_per_host = (machine[largest] - machine[1]) / (largest - 1)
    scale = wall[largest] / wall[1]
    print(f"controller CPU per added host: {cpu_per_host:.3f} s")
    print(f"machine CPU per added host (pyinfra and the host, on {os.cpu_count()} cores): "
          f"{machine_per_host:.3f} s")  # fmt: skip
    print(f"one-operation deploy, {largest} hosts / 1 host: {base[largest] / base[1]:.2f} "
          f"(pyinfra's own scaling on this machine)")  # fmt: skip
    print(f"start, connect and prepare (to the first operation, 1 host): "
          f"{median(r.until_first_operation() for r in noops[1]):.2f} s")  # fmt: skip

    operations = median(r.result.totals["hosts"] / size for size in SIZES for r in noops[size])
    facts = verbose.facts_by_operation()
    print(f"operations per host: {operations:g}")
    print(f"facts per host: {sum(sum(c.values()) for c in facts.values())} "
          f"({sum(facts['(prepare)'].values())} while preparing)")  # fmt: skip

    times = defaultdict(list)
    for timed in noops[1]:
        for name, seconds in timed.operation_times().items():
            times[name].append(seconds)
    slowest = sorted(times, key=lambda name: median(times[name]), reverse=True)[:10]
    print("\n10 slowest operations of a 1-host no-op (median s, facts):")
    for name in slowest:
        print(f"  {median(times[name]):5.2f}  {sum(facts[name].values()):>2}  {name}")

    ratio = wall[3] / base[3]
    print("\nissue 10's goals:")
    print(f"  no-op of 3 hosts {wall[3]:.2f} s <= {GOAL_NOOP_3} s: {goal(wall[3] <= GOAL_NOOP_3)}")
    print(f"  no-op of 3 hosts / one-operation deploy {ratio:.2f} <= {GOAL_RATIO_3}: "
          f"{goal(ratio <= GOAL_RATIO_3)}")  # fmt: skip
    print(f"  controller CPU per added host {cpu_per_host:.3f} s <= {GOAL_CPU_PER_HOST} s: "
          f"{goal(cpu_per_host <= GOAL_CPU_PER_HOST)}")  # fmt: skip
    print(f"  no-op of 10 hosts / of 1 host {scale:.2f} <= {GOAL_SCALE_10}: "
          f"{goal(scale <= GOAL_SCALE_10)}")  # fmt: skip


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) // 2**20
    cpu = model[1] if model else "unknown CPU"
    return f"{os.cpu_count()} x {cpu}, {memory} GiB, Linux {os.uname().release}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--distro", default="bookworm", choices=("bookworm", "trixie"))
    parser.add_argument(
        "--keep", action="store_true", help="leave the hosts up (a rerun's first converge is not)"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.distro} lab hosts")
    try:
        for name in NAMES:
            lab_cli("host-up", name, "--distro", args.distro)
        measure(Lab.load(), args.runs)
    finally:
        for name in [] if args.keep else NAMES:
            run([*LAB_CLI, "host-down", name])


if __name__ == "__main__":
    main()
