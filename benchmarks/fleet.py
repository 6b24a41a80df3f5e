"""The fleet measured (issue 23): flowerbed's runs on 10, 20 and 30 fresh lab hosts, and a model
of 100 and 1,000 hosts from them.

    .venv/bin/python benchmarks/fleet.py [--sizes 10,20,30] [--runs 3] [--rtt-ms 1,50]
    make bench-fleet

Needs the running lab (`make lab-up`); touches only hosts of its own (f10-1..f30-30: h1..h3 and
the lab's .lab/lab.env are left alone). For each size it boots that many fresh hosts, then
times, all with an inventory of those hosts alone (tests/inventories/lab.py with
FLOWERBED_TEST_ONLY_HOSTS) and a copy of the lab's secrets in a temporary directory
(FLOWERBED_ENV_FILE, which rotate.py rewrites):
- the first converge (deploy.py on fresh hosts, until each serves HTTPS);
- the no-op converge, verify.py and rotate.py (every dashboard login), median of --runs;
- pyinfra's own published benchmark deploy (benchmarks/deploys/pyinfra_benchmark.py), its
  first run and its second;
and for each run pyinfra's CPU (user + system, os.wait4), its peak RSS (ru_maxrss), the whole
machine's busy time per host (/proc/stat: the lab's hosts share this machine's cores, and so does
whatever else runs on it) and the hosts' own CPU per host (their cgroups' cpu.stat). The
hosts are removed after their size, also when a run fails.

From the sizes, a least-squares line per run gives the controller's CPU and memory per added
host, checked against issue 23's goals (CPU <= 0.05 s for the no-op, verify and rotate, memory
<= 5 MiB). The model of a larger fleet (printed with its assumptions) is

    wall(N) = a + c*N + ceil(N / P) * (R * RTT + h)

- a + c*N: pyinfra's CPU, fitted. pyinfra runs every host in one process, in one gevent loop, so
  its CPU is serial: it adds up over hosts whatever the number of cores.
- P: hosts in flight at once, pyinfra's default --parallel (20 per controller core).
- R: round trips one host waits for, in turn: an SSH connection (6: TCP, version exchange, key
  exchange and new keys, service request, public-key login), 2 per command (a channel opened,
  the command started; its output comes back with the reply), counted from a `-vv` run, and 3
  per HTTPS request from the controller (TCP, TLS 1.3, the request: verify.py makes 5 a host,
  rotate.py 2 a login). File uploads are not counted (the first converge's R is a floor).
- h: the host's own work, its CPU in the run (its cgroup's, at the largest size); a host with
  CPUs of its own does it beside the others, so it is paid once per wave.
- Hosts work in parallel; the lab's round trips are ~0.1 ms, so RTT is stated (--rtt-ms).
The model is checked against pyinfra's published figure for 100 hosts: 8.4 s for the first run
of its four-operation benchmark on Docker hosts (pyinfra's docs, Performance page: the 2024 run of
github.com/Fizzadar/pyinfra-performance, its latest_results.csv: pyinfra,100,First,8.367525),
with the same deploy measured here on the same sizes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from timed_runs import (
    REPO,
    Lab,
    Timed,
    changed_nothing,
    goal,
    lab_hosts,
    machine,
    median,
    serving_https,
    succeeded,
    timed_deploy,
)

SIZES = (10, 20, 30)
FLEET_INVENTORY = "tests/inventories/lab.py"
PYINFRA_BENCHMARK = "benchmarks/deploys/pyinfra_benchmark.py"
# the lab's worker fails tasks for other tests: verify.py's failed-task limit is not measured here
UNCOUNTED = {"flower_verify_max_failed_tasks": 10**6}
FIRST, NOOP, VERIFY, ROTATE = "first converge", "no-op converge", "verify.py", "rotate.py"
PYINFRA_FIRST, PYINFRA_SECOND = "pyinfra's benchmark, 1st", "pyinfra's benchmark, 2nd"
KINDS = (FIRST, NOOP, VERIFY, ROTATE, PYINFRA_FIRST, PYINFRA_SECOND)
GOAL_KINDS = (NOOP, VERIFY, ROTATE)
# issue 23's goals
GOAL_CPU_PER_HOST = 0.05
GOAL_MIB_PER_HOST = 5.0
# the model's round trips (see the docstring)
SSH_CONNECT_ROUND_TRIPS = 6
ROUND_TRIPS_PER_COMMAND = 2
ROUND_TRIPS_PER_HTTPS = 3
HTTPS_PER_HOST = {VERIFY: 5, ROTATE: 2}  # flowerbed/verify.py dashboard_verdicts; rotate: new, old
PARALLEL_PER_CORE = 20  # pyinfra's default --parallel (pyinfra/api/state.py)
MODEL_SIZES = (100, 1000)
# pyinfra's published run (latest_results.csv): first run on 1 and 100 hosts, second on 100
PUBLISHED_FIRST = {1: 1.149, 100: 8.368}
PUBLISHED_SECOND_100 = 6.540
# each lab host's systemd takes inotify instances (about 5): Debian's default 128 stops the 26th
INOTIFY_INSTANCES_PER_HOST = 8
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


def enough_inotify_instances(hosts: int) -> None:
    """Fail before booting when the machine cannot boot this many more hosts."""
    limit, wanted = int(INOTIFY_LIMIT.read_text()), 1024
    if limit < INOTIFY_INSTANCES_PER_HOST * hosts + 128:
        raise SystemExit(
            f"fs.inotify.max_user_instances is {limit}: {hosts} more lab hosts fail to boot "
            f'("Too many open files"); raise it: sysctl -w fs.inotify.max_user_instances={wanted}'
        )


def fleet_env(names: list[str], env_file: Path) -> dict[str, str]:
    return {"FLOWERBED_ENV_FILE": str(env_file), "FLOWERBED_TEST_ONLY_HOSTS": json.dumps(names)}


def measure_size(names: list[str], lab: Lab, env_file: Path, runs: int) -> dict[str, list[Timed]]:
    """Every kind of run on these fresh hosts (the first converge at `-vv`: its commands)."""
    options = {"inventory": FLEET_INVENTORY, "env": fleet_env(names, env_file)}
    found: dict[str, list[Timed]] = defaultdict(list)
    found[FIRST].append(succeeded(timed_deploy(names, verbosity=2, **options)))
    serving_https(lab, names)
    found[PYINFRA_FIRST].append(succeeded(timed_deploy(names, PYINFRA_BENCHMARK, **options)))
    changed_nothing(timed_deploy(names, **options))  # settle: caches warm
    for _ in range(runs):  # interleaved, so load from others hits each kind alike
        found[NOOP].append(changed_nothing(timed_deploy(names, **options)))
        found[VERIFY].append(verified(names, options))
        found[ROTATE].append(succeeded(timed_deploy(names, "rotate.py", **options)))
        found[PYINFRA_SECOND].append(succeeded(timed_deploy(names, PYINFRA_BENCHMARK, **options)))
    return found


def verified(names: list[str], options: dict, verbosity: int = 0) -> Timed:
    return changed_nothing(timed_deploy(names, "verify.py", verbosity, data=UNCOUNTED, **options))


def commands_per_host(names: list[str], env_file: Path, first: Timed) -> dict[str, float]:
    """Commands one host runs in each kind of run (a `-vv` run of each, not timed)."""
    options = {"inventory": FLEET_INVENTORY, "env": fleet_env(names, env_file)}
    verbose = {
        FIRST: first,
        NOOP: changed_nothing(timed_deploy(names, verbosity=2, **options)),
        VERIFY: verified(names, options, verbosity=2),
        ROTATE: succeeded(timed_deploy(names, "rotate.py", 2, **options)),
        PYINFRA_SECOND: succeeded(timed_deploy(names, PYINFRA_BENCHMARK, 2, **options)),
    }
    counts = {
        kind: median(run.commands_by_host()[n] for n in names) for kind, run in verbose.items()
    }
    counts[PYINFRA_FIRST] = counts[PYINFRA_SECOND]  # the same operations; a floor for the first
    return counts


# --- fitting and the model -------------------------------------------------------------------


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (x, y) points."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


@dataclass(frozen=True)
class Fit:
    """One kind of run across the sizes: medians per size, lines through them."""

    wall: tuple[float, float]  # (intercept, slope) of the wall time
    cpu: tuple[float, float]  # of pyinfra's CPU
    rss: tuple[float, float]  # of pyinfra's peak RSS, MiB
    machine: tuple[float, float]  # of the machine's busy time
    hosts: tuple[float, float]  # of the hosts' own CPU (their cgroups)
    host_work: float  # a host's own CPU at the largest size

    @classmethod
    def of(cls, by_size: dict[int, list[Timed]]) -> Fit:
        def line(value) -> tuple[float, float]:
            return least_squares(
                [(n, median(value(r) for r in runs)) for n, runs in by_size.items()]
            )

        largest = max(by_size)
        return cls(
            wall=line(lambda r: r.seconds),
            cpu=line(lambda r: r.cpu),
            rss=line(lambda r: r.peak_rss_mib),
            machine=line(lambda r: r.machine_cpu),
            hosts=line(lambda r: r.hosts_cpu),
            host_work=median(r.hosts_cpu for r in by_size[largest]) / largest,
        )


def round_trips(kind: str, commands: float) -> float:
    """R: the round trips one host waits for, in turn, in a run of this kind."""
    https = HTTPS_PER_HOST.get(kind, 0)
    return (
        SSH_CONNECT_ROUND_TRIPS + ROUND_TRIPS_PER_COMMAND * commands + ROUND_TRIPS_PER_HTTPS * https
    )


def modelled_wall(fit: Fit, hosts: int, trips: float, rtt: float, cores: int) -> float:
    """wall(N) = a + c*N + ceil(N / P) * (R * RTT + h), on hosts with CPUs of their own."""
    in_flight = min(PARALLEL_PER_CORE * cores, hosts)
    waves = math.ceil(hosts / in_flight)
    start, per_host = fit.cpu
    return start + per_host * hosts + waves * (trips * rtt + fit.host_work)


def modelled_mib(fit: Fit, hosts: int) -> float:
    return fit.rss[0] + fit.rss[1] * hosts


# --- printing ---------------------------------------------------------------------------------


def print_sizes(results: dict[int, dict[str, list[Timed]]], runs: int) -> None:
    print(f"\nper size (medians of {runs}; the first runs once):", flush=True)
    print(f"{'run':<26} {'hosts':>5} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>12}"
          f" {'machine CPU s/host':>18} {'host CPU s/host':>15} {'runs':>4}")  # fmt: skip
    for kind in KINDS:
        for size, found in results.items():
            timed = found[kind]
            print(
                f"{kind:<26} {size:>5} {median(r.seconds for r in timed):>7.2f}"
                f" {median(r.cpu for r in timed):>6.2f}"
                f" {median(r.peak_rss_mib for r in timed):>12.1f}"
                f" {median(r.machine_cpu for r in timed) / size:>18.3f}"
                f" {median(r.hosts_cpu for r in timed) / size:>15.3f}"
                f" {len(timed):>4}"
            )


def print_fits(fits: dict[str, Fit], cores: int) -> None:
    print("\nper added host (least-squares slope over the sizes):")
    print(f"{'run':<26} {'CPU s':>6} {'MiB':>6} {'wall s':>7} {'machine CPU s':>13}"
          f" {'host CPU s':>10}")  # fmt: skip
    for kind, fit in fits.items():
        print(
            f"{kind:<26} {fit.cpu[1]:>6.3f} {fit.rss[1]:>6.2f} {fit.wall[1]:>7.3f}"
            f" {fit.machine[1]:>13.3f} {fit.hosts[1]:>10.3f}"
        )
    print("\nissue 23's goals:")
    for kind in GOAL_KINDS:
        cpu = fits[kind].cpu[1]
        print(f"  {kind}: controller CPU per added host {cpu:.3f} s <= {GOAL_CPU_PER_HOST} s: "
              f"{goal(cpu <= GOAL_CPU_PER_HOST)}")  # fmt: skip
    for kind in GOAL_KINDS:
        mib = fits[kind].rss[1]
        print(f"  {kind}: controller memory per added host {mib:.2f} MiB <= {GOAL_MIB_PER_HOST} "
              f"MiB: {goal(mib <= GOAL_MIB_PER_HOST)}")  # fmt: skip
    for kind in (VERIFY, ROTATE):
        wall, serial = fits[kind].wall[1], fits[kind].cpu[1] + fits[kind].hosts[1]
        parallel = serial / cores
        print(f"  {kind}: no host after host: wall per added host {wall:.3f} s, nearer to the "
              f"CPU an added host costs (pyinfra's and its own) over {cores} cores "
              f"({parallel:.3f} s: hosts side by side) than to all of it ({serial:.3f} s: one "
              f"after another): {goal(wall <= (parallel + serial) / 2)}")  # fmt: skip


def print_model(fits: dict[str, Fit], commands: dict[str, float], rtts: list[float], cores: int):
    print(
        f"\nmodel: hosts with CPUs of their own, pyinfra on a controller like this one ({cores} "
        f"cores: {PARALLEL_PER_CORE * cores} hosts in flight, pyinfra's default --parallel);\n"
        "  wall = a + c*N + ceil(N / in flight) * (R * RTT + h): pyinfra's CPU serial in its one "
        "gevent loop,\n  hosts in parallel, each waiting for its R round trips and its own work h "
        f"in turn (R = {SSH_CONNECT_ROUND_TRIPS} to connect + {ROUND_TRIPS_PER_COMMAND} a "
        f"command + {ROUND_TRIPS_PER_HTTPS} an HTTPS request);\n  wall seconds at N hosts @ RTT, "
        "and pyinfra's peak memory at 1,000 hosts (the line through the sizes):"
    )
    header = "".join(f"{f'{n}@{rtt * 1000:g}ms':>11}" for n in MODEL_SIZES for rtt in rtts)
    print(f"{'run':<26} {'a s':>5} {'c s':>6} {'R':>5} {'h s':>5}{header} {'MiB at 1,000':>13}")
    for kind, fit in fits.items():
        trips = round_trips(kind, commands[kind])
        walls = "".join(
            f"{modelled_wall(fit, n, trips, rtt, cores):>11.1f}"
            for n in MODEL_SIZES
            for rtt in rtts
        )
        print(
            f"{kind:<26} {fit.cpu[0]:>5.2f} {fit.cpu[1]:>6.3f} {trips:>5.0f} {fit.host_work:>5.2f}"
            f"{walls} {modelled_mib(fit, 1000):>13.0f}"
        )


def print_check(fits: dict[str, Fit], commands: dict[str, float], cores: int) -> None:
    """The model against pyinfra's published 100-host run of the same four operations."""
    fit = fits[PYINFRA_FIRST]
    trips = round_trips(PYINFRA_FIRST, commands[PYINFRA_FIRST])
    own = modelled_wall(fit, 100, trips, 0.0, cores)
    shared = fit.wall[0] + fit.wall[1] * 100
    published = (PUBLISHED_FIRST[100] - PUBLISHED_FIRST[1]) / 99
    print(
        "\ncheck against pyinfra's published figure (its docs' Performance page, "
        "github.com/Fizzadar/pyinfra-performance latest_results.csv):\n"
        f"  pyinfra's four-operation benchmark, first run, 100 Docker hosts on the "
        f"controller's machine: {PUBLISHED_FIRST[100]:.1f} s published "
        f"({PUBLISHED_SECOND_100:.1f} s the second run); {published:.3f} s per added host "
        f"(1 host: {PUBLISHED_FIRST[1]:.2f} s)\n"
        f"  the same deploy here, hosts on this machine's {cores} cores, the line through "
        f"the sizes at 100 hosts: {shared:.1f} s ({fit.wall[1]:.3f} s per added host)\n"
        f"  the model, hosts with CPUs of their own, RTT 0 (Docker on the same machine): "
        f"{own:.1f} s; published / model: {PUBLISHED_FIRST[100] / own:.2f}"
    )


# --- the run ----------------------------------------------------------------------------------


def git_commit() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return described.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="e.g. 2,3 for a trial")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rtt-ms", default="1,50", help="the model's round-trip times")
    parser.add_argument("--distro", default="bookworm", choices=("bookworm", "trixie"))
    parser.add_argument("--keep", action="store_true", help="leave each size's hosts up")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    rtts = [float(ms) / 1000 for ms in args.rtt_ms.split(",")]
    if len(sizes) < 2:
        parser.error("--sizes: at least two sizes, for a line through them")
    cores = os.cpu_count()
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"machine: {machine()}; {args.distro} lab hosts; commit {git_commit()}; {now}")

    results: dict[int, dict[str, list[Timed]]] = {}
    commands: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="flowerbed-fleet-") as scratch:
        env_file = Path(scratch) / "lab.env"  # rotate.py rewrites it: never the lab's own
        shutil.copy(Lab.load().state["secrets_file"], env_file)
        env_file.chmod(0o600)
        for size in sizes:
            names = [f"f{size}-{i}" for i in range(1, size + 1)]
            started = time.monotonic()
            with lab_hosts(names, args.distro, keep=args.keep) as lab:
                booted = time.monotonic() - started
                results[size] = measure_size(names, lab, env_file, args.runs)
                if size == sizes[0]:
                    commands = commands_per_host(names, env_file, results[size][FIRST][0])
            first = results[size][FIRST][0].seconds
            print(f"{size} fresh hosts: booted in {booted:.0f} s (one by one: lab.py's lock), "
                  f"first converge {first:.1f} s, measured and removed", flush=True)  # fmt: skip
            print_sizes({size: results[size]}, args.runs)

    print_sizes(results, args.runs)
    print(f"\ncommands per host (-vv, {sizes[0]} hosts): "
          + ", ".join(f"{kind} {n:g}" for kind, n in commands.items()))  # fmt: skip
    fits = {kind: Fit.of({size: found[kind] for size, found in results.items()}) for kind in KINDS}
    print_fits(fits, cores)
    print_model(fits, commands, rtts, cores)
    print_check(fits, commands, cores)


if __name__ == "__main__":
    main()
