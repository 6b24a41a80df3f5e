"""Flower's memory watchdog: runs inside Flower, started by flowerconfig.py (flowerbed/memory.py).

Every CHECK_SECONDS it reads the process's resident memory (/proc/self/statm). Above
RESTART_SHARE of the ceiling it counts the restart in the state directory's record, logs one
line and sends Flower its own SIGTERM: Flower saves its state (an atexit handler) and this
module's atexit handler, registered before Flower's and so run after it, exits 75. The unit's
Restart=on-failure starts Flower again. A backstop exits 75 itself when Flower has not stopped
after twice its stop timeout.

A Flower whose first check after binding its socket is over NEAR_SHARE (a large saved state
costs more to load than to build) is not restarted again in that run: it would loop.

Flower's /metrics (prometheus_client's default registry) gains the resident memory, the
ceiling, the restarts counted and the last one's time. Standard library only, besides the
prometheus_client Flower ships with: this file runs on the host's Python.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import sys
import threading
import time

CHECK_SECONDS = 2.0
RESTART_SHARE = 0.90
NEAR_SHARE = 0.80
EXIT_RESTART = 75  # EX_TEMPFAIL: a failure to systemd, so Restart=on-failure starts Flower again
PAGE = os.sysconf("SC_PAGE_SIZE")
_exit_code: list[int] = []


def resident_bytes(statm: str = "/proc/self/statm") -> int:
    with open(statm) as f:
        return int(f.read().split()[1]) * PAGE


def read_record(record: str) -> dict:
    """{"restarts": n, "last": unix time, "at": resident bytes} ({} before the first)."""
    try:
        with open(record) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def count_restart(record: str, resident: int, now: float) -> dict:
    """One more restart in the record (written whole, then renamed in)."""
    found = read_record(record)
    counted = {"restarts": int(found.get("restarts", 0)) + 1, "last": now, "at": resident}
    staging = f"{record}.tmp"
    with open(staging, "w") as f:
        json.dump(counted, f)
    os.replace(staging, record)
    return counted


def bound_since(socket: str, started: float) -> bool:
    """Flower has bound its socket since this process started (always, without a socket): as
    the socket keeper in this process saw it, else from the socket file's time."""
    if not socket:
        return True
    keeper = sys.modules.get("flowerbed_socket_keeper")
    if keeper is not None:
        return bool(keeper.bound)
    try:
        return os.stat(socket).st_mtime >= started - 1
    except OSError:
        return False


class Watchdog(threading.Thread):
    def __init__(self, max_bytes: int, record: str, socket: str, stop_timeout_sec: float):
        super().__init__(name="flowerbed-memory-watchdog", daemon=True)
        self.max_bytes, self.record, self.socket = max_bytes, record, socket
        self.stop_timeout_sec = stop_timeout_sec
        self.started = time.time()
        self.armed: bool | None = None  # decided at the first check after the socket is bound

    def decide(self, resident: int, bound: bool) -> str:
        """One of "wait" (still starting), "keep" (over NEAR_SHARE at start: not restarted
        in this run), "restart", or "ok"."""
        share = resident / self.max_bytes
        if not bound:
            return "wait"
        if self.armed is None:
            self.armed = share <= NEAR_SHARE
            if not self.armed:
                return "keep"
        if self.armed and share > RESTART_SHARE:
            return "restart"
        return "ok"

    def run(self) -> None:
        while True:
            time.sleep(CHECK_SECONDS)
            resident = resident_bytes()
            action = self.decide(resident, bound_since(self.socket, self.started))
            if action == "keep":
                log(
                    f"resident {mib(resident)} is over {NEAR_SHARE:.0%} of the ceiling "
                    f"{mib(self.max_bytes)} right after start (its saved state): not restarted "
                    "at the ceiling in this run"
                )
            elif action == "restart":
                self.restart(resident)
                return

    def restart(self, resident: int) -> None:
        count_restart(self.record, resident, time.time())
        log(
            f"resident {mib(resident)} is over {RESTART_SHARE:.0%} of the ceiling "
            f"{mib(self.max_bytes)}: saving Flower's state and restarting it (exit "
            f"{EXIT_RESTART})"
        )
        _exit_code.append(EXIT_RESTART)
        os.kill(os.getpid(), signal.SIGTERM)  # Flower saves its state on SIGTERM, then exits
        time.sleep(2 * self.stop_timeout_sec)  # the backstop: Flower did not stop
        log(f"Flower did not stop in {2 * self.stop_timeout_sec:g} s: exit {EXIT_RESTART}")
        _exit_now()


def mib(size: float) -> str:
    return f"{size / 1024**2:.1f} MiB"


def log(line: str) -> None:
    print(f"flowerbed memory watchdog: {line}", file=sys.stderr, flush=True)


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(EXIT_RESTART)


def _at_exit() -> None:
    """Runs after Flower's own atexit handler (which saves its state): registered before it."""
    if _exit_code:
        _exit_now()


def metrics(watchdog: Watchdog) -> None:
    """The watchdog's values on Flower's /metrics (prometheus_client's default registry)."""
    try:
        from prometheus_client import Counter, Gauge
    except ImportError:  # Flower without prometheus_client: the watchdog still works
        return
    found = read_record(watchdog.record)
    Gauge(
        "flowerbed_flower_resident_memory_bytes", "Flower's resident memory (/proc/self/statm)"
    ).set_function(resident_bytes)
    Gauge("flowerbed_flower_memory_max_bytes", "Flower's memory ceiling (flower_memory_max)").set(
        watchdog.max_bytes
    )
    Counter(
        "flowerbed_flower_memory_restarts", "Restarts at the ceiling, counted by the watchdog"
    ).inc(int(found.get("restarts", 0)))
    Gauge(
        "flowerbed_flower_memory_last_restart_timestamp_seconds",
        "When the watchdog last restarted Flower at its ceiling (0: never)",
    ).set(float(found.get("last", 0)))


def start(max_bytes: int, record: str, socket: str, stop_timeout_sec: float) -> Watchdog:
    """Called by flowerconfig.py, before Flower registers its own atexit handler."""
    atexit.register(_at_exit)
    watchdog = Watchdog(max_bytes, record, socket, stop_timeout_sec)
    metrics(watchdog)
    watchdog.start()
    return watchdog
