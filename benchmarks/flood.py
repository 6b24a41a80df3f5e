"""Flower under a flood of task events: its memory and its API latency through nginx.

    .venv/bin/python benchmarks/flood.py [--tasks 200000] [--rate 1000]
        [--max-tasks 20000] [--payload 1024]

Boots a fresh lab host (`make lab-up` first), deploys it with `flower_max_tasks` set and the
lab's Redis at a database of its own (so the shared hosts' Flowers never see the flood), then
sends the events a worker would send for each task (task-received, task-started,
task-succeeded, and the worker's heartbeats) straight to the broker's event exchange, paced at
--rate tasks a second: Celery's own event dispatcher, no worker process, so the lab's cores go
to Flower rather than to running no-op tasks. Meanwhile it samples the RSS of the flower
process on the host and times GET /api/tasks?limit=100 and /api/workers through nginx with a
login, one keep-alive connection each, as a dashboard polls. --payload N gives each task's
args, kwargs and result N characters each (Flower keeps them per task: the per-task cost that
flowerbed/memory.py's default ceiling is derived from). Flower's /metrics
(`flower_events_total`) says how many events it has handled, so the lag shows whether the
rate is one Flower keeps up with. Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from celery import Celery  # noqa: E402
from conftest import Lab  # noqa: E402
from deploy_helpers import run_deploy  # noqa: E402

from flowerbed.probe import https_get  # noqa: E402

LAB = ["python3", str(REPO / "lab" / "lab.py")]
HOST = "benchflood"
DATABASE = 7  # the lab's hosts use 0
WORKER = "flood@labmachine"
TASK = "flowerbed_bench.noop"
EVENTS = re.compile(r"^flower_events_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def broker_at_own_database(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{DATABASE}"))


class Flood:
    """The events of `tasks` tasks at `rate` tasks a second, with heartbeats every 2 s."""

    def __init__(self, broker: str, tasks: int, rate: int, payload: int = 0):
        self.app = Celery(broker=broker)
        self.tasks, self.rate = tasks, rate
        self.payload = payload
        self.sent = 0
        self.events = 0  # task events (what flower_events_total counts)

    def run(self) -> None:
        with self.app.connection_for_write() as connection:
            dispatcher = self.app.events.Dispatcher(connection, hostname=WORKER, enabled=True)
            started = last_beat = time.monotonic()
            self.heartbeat(dispatcher)
            while self.sent < self.tasks:
                due = min(self.tasks, int((time.monotonic() - started) * self.rate) + 1)
                while self.sent < due:
                    self.one_task(dispatcher)
                if time.monotonic() - last_beat >= 2:
                    self.heartbeat(dispatcher)
                    last_beat = time.monotonic()
                time.sleep(0.005)
            self.heartbeat(dispatcher)

    def one_task(self, dispatcher) -> None:
        task_id = str(uuid.uuid4())
        now = time.time()
        args, kwargs, result = self.payloads(task_id)
        dispatcher.send(
            "task-received", uuid=task_id, name=TASK, args=args, kwargs=kwargs, retries=0,
            eta=None, expires=None, root_id=task_id, parent_id=None,
        )  # fmt: skip
        dispatcher.send("task-started", uuid=task_id)
        dispatcher.send("task-succeeded", uuid=task_id, result=result, runtime=time.time() - now)
        self.sent += 1
        self.events += 3

    def payloads(self, task_id: str) -> tuple[str, str, str]:
        """args, kwargs and result as a worker reports them (reprs), `payload` characters each
        (unique per task, so nothing is shared between tasks)."""
        if not self.payload:
            return "()", "{}", "None"
        filler = (task_id * (self.payload // len(task_id) + 1))[: self.payload]
        return f"('{filler[:-4]}',)", f"{{'x': '{filler[:-9]}'}}", f"'{filler[:-2]}'"

    def heartbeat(self, dispatcher) -> None:
        dispatcher.send(
            "worker-heartbeat", freq=2.0, active=0, processed=self.sent, loadavg=[0, 0, 0],
            sw_ident="py-celery", sw_ver="5", sw_sys="Linux",
        )  # fmt: skip


class Sampler(threading.Thread):
    """Call `sample()` every `every` seconds until stopped; keep (seconds since start, value)."""

    def __init__(self, sample, every: float, origin: float):
        super().__init__(daemon=True)
        self.sample, self.every, self.origin = sample, every, origin
        self.values: list[tuple[float, object]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.values.append((time.monotonic() - self.origin, self.sample()))
            self.stop.wait(self.every)


def flower_rss_mib(name: str) -> float:
    script = "ps -o rss= -p $(systemctl show -p MainPID --value flower)"
    done = subprocess.run([*LAB, "ssh", name, script], capture_output=True, text=True, timeout=30)
    return int(done.stdout.split()[0]) / 1024 if done.stdout.split() else float("nan")


def handled_events(fqdn: str, ca: str) -> int:
    """Events Flower has handled (its /metrics; the lab machine is a monitoring source)."""
    answer = https_get(fqdn, "/metrics", ca_bundle=ca, timeout=30)
    if answer.status != 200:
        return -1
    return int(sum(float(value) for value in EVENTS.findall(answer.body)))


def api_seconds(fqdn: str, ca: str, login: tuple[str, str], path: str) -> float | None:
    started = time.perf_counter()
    answer = https_get(fqdn, path, ca_bundle=ca, login=login, timeout=60, patience=1)
    return time.perf_counter() - started if answer.status == 200 else None


def summary(seconds: list[float | None]) -> str:
    failed = sum(s is None for s in seconds)
    ms = sorted(s * 1000 for s in seconds if s is not None)
    if len(ms) < 2:
        return f"{len(ms)} answers, {failed} failed"
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[-1]
    return (
        f"p50 {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  max {ms[-1]:7.1f} ms  "
        f"({len(ms)} requests, {failed} failed)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000, help="tasks a second")
    parser.add_argument("--max-tasks", type=int, default=20_000)
    parser.add_argument("--distro", default="trixie")
    parser.add_argument("--payload", type=int, default=0, help="characters of args/kwargs/result")
    args = parser.parse_args()

    subprocess.run(
        [*LAB, "host-up", HOST, "--distro", args.distro], check=True, capture_output=True
    )
    try:
        lab = Lab.load()
        broker = broker_at_own_database(lab.secrets["FLOWERBED_BROKER_URL"])
        data = {"flower_max_tasks": args.max_tasks, "flower_healthcheck_min_workers": 0}
        deployed = run_deploy([HOST], data, env={"FLOWERBED_BROKER_URL": broker})
        if not deployed.ok:
            sys.exit(deployed.explain())
        measure(lab, broker, args)
    finally:
        subprocess.run([*LAB, "host-down", HOST], capture_output=True)


def measure(lab: Lab, broker: str, args: argparse.Namespace) -> None:
    fqdn, ca, login = lab.host(HOST)["fqdn"], lab.state["acme"]["root"], lab.dashboard_login
    print(
        f"host {HOST} ({args.distro}), flower_max_tasks={args.max_tasks}, {args.tasks} tasks "
        f"at {args.rate}/s (3 events each, payload {args.payload}), broker database {DATABASE}"
    )
    idle = {path: [api_seconds(fqdn, ca, login, path) for _ in range(10)] for path in PATHS}
    rss_before, events_before = flower_rss_mib(HOST), handled_events(fqdn, ca)
    flood = Flood(broker, args.tasks, args.rate, args.payload)
    origin = time.monotonic()

    def progress() -> tuple[int, int, float]:
        sent = flood.events
        return sent, handled_events(fqdn, ca) - events_before, flower_rss_mib(HOST)

    watch = Sampler(progress, 10, origin)
    pollers = {p: Sampler(lambda p=p: api_seconds(fqdn, ca, login, p), 1, origin) for p in PATHS}
    for sampler in (watch, *pollers.values()):
        sampler.start()
    flood.run()
    sending = time.monotonic() - origin
    deadline = time.monotonic() + 120  # Flower drains what it has not handled yet
    while handled_events(fqdn, ca) - events_before < flood.events and time.monotonic() < deadline:
        time.sleep(2)
    time.sleep(5)
    for sampler in (watch, *pollers.values()):
        sampler.stop.set()
        sampler.join(90)
    handled = handled_events(fqdn, ca) - events_before
    report(flood, sending, rss_before, handled, watch, idle, pollers)


PATHS = ["/api/tasks?limit=100", "/api/workers"]


def report(flood, sending, rss_before, handled, watch, idle, pollers) -> None:
    print(
        f"sent {flood.sent} tasks ({flood.events} task events, and heartbeats) in {sending:.0f} s: "
        f"{flood.sent / sending:.0f} tasks/s, {flood.events / sending:.0f} events/s"
    )
    print("   t (s)   events sent   handled by Flower   Flower's RSS (MiB)")
    print(f"  {'before':>6}   {0:11d}   {0:17d}   {rss_before:18.1f}")
    for at, (sent, done, rss) in watch.values:
        print(f"  {at:6.0f}   {sent:11d}   {done:17d}   {rss:18.1f}")
    print(f"events handled by Flower: {handled} of {flood.events} ({flood.events - handled} not)")
    rss = [value[2] for _, value in watch.values]
    tail = rss[len(rss) * 2 // 3 :]
    print(
        f"RSS: before {rss_before:.1f} MiB, peak {max(rss):.1f} MiB, last {rss[-1]:.1f} MiB; "
        f"over the last third of the run {min(tail):.1f}..{max(tail):.1f} MiB"
    )
    for path, sampler in pollers.items():
        print(f"GET {path} (basic auth login, through nginx, a new connection each):")
        print(f"  idle:   {summary(idle[path])}")
        print(f"  flood:  {summary([value for _, value in sampler.values])}")


if __name__ == "__main__":
    main()
