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
from collections import defaultdict

from timed_runs import (
    Lab,
    Timed,
    first_converge,
    goal,
    lab_hosts,
    machine,
    median,
    no_op,
)

SIZES = (1, 3, 10)
NAMES = [f"cv{i}" for i in range(1, max(SIZES) + 1)]
BASELINE = "benchmarks/deploys/one_operation.py"
# issue 10's goals
GOAL_NOOP_3 = 4.0
GOAL_RATIO_3 = 3.5
GOAL_CPU_PER_HOST = 0.25
GOAL_SCALE_10 = 1.3


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
    verbose = no_op(NAMES[:1], verbosity=1)

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--distro", default="bookworm", choices=("bookworm", "trixie"))
    parser.add_argument(
        "--keep", action="store_true", help="leave the hosts up (a rerun's first converge is not)"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}; {args.distro} lab hosts")
    with lab_hosts(NAMES, args.distro, keep=args.keep) as lab:
        measure(lab, args.runs)


if __name__ == "__main__":
    main()
