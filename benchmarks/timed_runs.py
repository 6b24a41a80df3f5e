"""What benchmarks/converge.py and benchmarks/fleet.py share (a module, not a benchmark: `make
bench` leaves it out): pyinfra runs timed with their controller CPU, peak memory and the whole
machine's busy time, fresh lab hosts that are removed whatever happens, and the machine's
description for the record.

    with lab_hosts(["cv1", "cv2"], "bookworm"):
        run = timed_deploy(["cv1", "cv2"])
        print(run.seconds, run.cpu, run.peak_rss_mib, run.machine_cpu)
"""

from __future__ import annotations

import contextlib
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
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO))

from conftest import LAB_CLI, Lab, lab_cli, run  # noqa: E402
from deploy_helpers import ANSI, DeployResult, deploy_args, deploy_env, run_deploy  # noqa: E402
from labkit.hosts import host_cgroups  # noqa: E402

from flowerbed.probe import https_get  # noqa: E402

OPERATION_START = re.compile(r"^--> Starting operation: (?P<name>.+?)\s*$")
LOADED_FACT = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+Loaded fact (?P<fact>\S+)")
COMMAND_SENT = re.compile(r"^\s*\[(?P<host>[^\]]+)\]\s+>>> ")  # `-vv`: each command on a host


@dataclass
class Timed:
    """One pyinfra run: its result, the CPU and memory it used, and its log lines with their
    times."""

    result: DeployResult
    cpu: float  # pyinfra's user + system time (os.wait4)
    peak_rss_mib: float  # pyinfra's largest resident set (os.wait4's ru_maxrss)
    machine_cpu: float  # every core's busy time during the run: pyinfra's and the lab hosts'
    lines: list[tuple[float, str]]
    hosts_cpu: float = 0.0  # the run's hosts' own CPU (their cgroups): not others' load

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

    def commands_by_host(self) -> Counter:
        """Commands each host ran (a `-vv` run prints each one, facts' included)."""
        return Counter(m["host"] for _, line in self.lines if (m := COMMAND_SENT.match(line)))


def timed_deploy(
    names: list[str],
    deploy_file: str = "deploy.py",
    verbosity: int = 0,
    *,
    inventory: str = "inventory/lab.py",
    data: dict | None = None,
    env: dict[str, str] | None = None,
) -> Timed:
    """run_deploy's command, with each log line's time and the run's CPU and memory."""
    flags = ("-y", "--json", *(["-" + "v" * verbosity] if verbosity else []))
    args = deploy_args(names, data, flags, inventory, deploy_file)
    busy_before, hosts_before = machine_busy_seconds(), hosts_cpu_seconds(names)
    started = time.monotonic()
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=deploy_env(env),
    )  # fmt: skip
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
    hosts_cpu = hosts_cpu_seconds(names) - hosts_before
    process.returncode = os.waitstatus_to_exitcode(status)
    log = "".join(line for _, line in lines)
    result = DeployResult(args, process.returncode, stdout, log, seconds)
    peak = usage.ru_maxrss / 1024  # KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    return Timed(result, cpu, peak, machine_cpu, lines, hosts_cpu)


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat): the lab's hosts run on
    this machine's cores, so their share of a run shows here and not in pyinfra's own CPU."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def hosts_cpu_seconds(names: list[str]) -> float:
    """CPU seconds the lab hosts `names` used since they booted: every process in each one's
    cgroup (cgroup v2's cpu.stat; 0 for a host without one)."""
    stats = [cgroup / "cpu.stat" for name in names for cgroup in host_cgroups(name)]
    usage = [stat.read_text().split("usage_usec ")[1] for stat in stats if stat.exists()]
    return sum(int(text.split()[0]) for text in usage) / 1e6


def changed_nothing(run: Timed) -> Timed:
    """The run, if it succeeded and changed nothing; else the benchmark stops, saying why."""
    totals = run.result.totals if run.result.ok else {}
    if not run.result.ok or totals["success"] or totals["error"]:
        sys.exit(f"not a no-op run ({totals}):\n{run.result.explain()}")
    return run


def no_op(names: list[str], deploy_file: str = "deploy.py", verbosity: int = 0, **kwargs) -> Timed:
    return changed_nothing(timed_deploy(names, deploy_file, verbosity, **kwargs))


def succeeded(run: Timed) -> Timed:
    if not run.result.ok:
        sys.exit(run.result.explain())
    return run


def serving_https(lab: Lab, names: list[str]) -> None:
    """Each host serves the dashboard over HTTPS (its health check), or the benchmark stops."""
    for name in names:
        answer = https_get(
            lab.host(name)["fqdn"], "/healthcheck", ca_bundle=lab.state["acme"]["root"]
        )
        if answer.status != 200:
            sys.exit(f"{name} does not serve HTTPS after its first converge: {answer}")


def first_converge(lab: Lab, names: list[str]) -> DeployResult:
    """The whole deploy on fresh hosts, then each must serve the dashboard over HTTPS."""
    result = run_deploy(names)
    if not result.ok:
        sys.exit(result.explain())
    serving_https(lab, names)
    return result


@contextlib.contextmanager
def lab_hosts(names: list[str], distro: str, keep: bool = False):
    """Fresh lab hosts for the block, removed after it (also when it fails), unless `keep`.
    `lab.py host-up` holds the lab's lock while it boots a host, so they boot one by one."""
    try:
        for name in names:
            booted = run([*LAB_CLI, "host-up", name, "--distro", distro], timeout=600)
            if booted.returncode != 0:  # e.g. ssh late on a busy machine: lab.py removed it
                print(f"{name}: {booted.stderr.strip()}; booting it again", flush=True)
                lab_cli("host-up", name, "--distro", distro)
        yield Lab.load()
    finally:
        for name in [] if keep else names:
            run([*LAB_CLI, "host-down", name])


def median(values) -> float:
    return statistics.median(values)


def goal(ok: bool) -> str:
    return "met" if ok else "MISSED"


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) // 2**20
    cpu = model[1] if model else "unknown CPU"
    return f"{os.cpu_count()} x {cpu}, {memory} GiB, Linux {os.uname().release}"
