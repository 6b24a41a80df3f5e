"""Commands, and the lab's own processes: each started in its own session and tracked by a PID
file in .lab/run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .config import RUN


class LabError(Exception):
    """A lab step failed; the message says which and what to do."""


def log(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def pid_alive(name: str) -> int | None:
    pid_file = RUN / f"{name}.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return None if pid_gone_or_zombie(pid) else pid


def spawn(name: str, args: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
    """Start a lab process in its own session, logging to .lab/run/NAME.log."""
    RUN.mkdir(parents=True, exist_ok=True)
    with open(RUN / f"{name}.log", "ab") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    (RUN / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def stop(name: str, timeout: float = 10) -> None:
    """Stop a lab process by its PID file: SIGTERM, then SIGKILL after `timeout`; then SIGKILL
    to what is left of its session (spawn gives each its own)."""
    pid = pid_alive(name)
    if pid:
        signal_process(pid, signal.SIGTERM)
        if not wait_for(lambda: pid_gone_or_zombie(pid), timeout, ignore=True):
            signal_process(pid, signal.SIGKILL)
        # its session's leftovers too (a worker's pool processes), so nothing outlives it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    (RUN / f"{name}.pid").unlink(missing_ok=True)


def signal_process(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def pid_gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def wait_for(check, timeout: float, ignore: bool = False, what: str = "") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    if ignore:
        return False
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(address: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def process_start_time(pid: int) -> float:
    """When a process started, in seconds since the epoch (from /proc)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")
