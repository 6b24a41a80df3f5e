"""One lab per machine: a lab coming up stops what a lab in another checkout left behind."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from .config import ACTIVE_LAB, CACHE, HOSTS, LAB
from .hosts import dismantle_host
from .process import log, pid_gone_or_zombie, process_start_time, wait_for


def remove_foreign_hosts() -> set[Path]:
    """Hosts of a lab in another checkout (one a killed session left behind) share this
    machine's bridge, names and addresses: stop and unmount them. One lab per machine.
    Returns the .lab directories they belonged to."""
    foreign = set()
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        root, options = Path(fields[1]), fields[3]
        if fields[0] != "overlay" or f"lowerdir={CACHE}/base-" not in options:
            continue
        if root.parent.parent == HOSTS.resolve():  # .lab may be reached by a symlink
            continue
        name = root.parent.name
        foreign.add(root.parent.parent.parent)
        log(f"removing {name}, left by a lab in {root.parent.parent.parent}")
        dismantle_host(name, root)
    return foreign


def stop_foreign_labs() -> None:
    """A lab alive in another checkout holds this machine's ports (pebble, Redis, DNS...):
    stop its hosts and its services before this lab starts its own."""
    foreign = remove_foreign_hosts()
    if ACTIVE_LAB.is_file():
        foreign.add(Path(ACTIVE_LAB.read_text().strip()))
    foreign.discard(LAB.resolve())
    for lab_dir in sorted(foreign):
        for pid_file in sorted((lab_dir / "run").glob("*.pid")):
            stop_foreign_process(pid_file)


def stop_foreign_process(pid_file: Path) -> None:
    """Stop the process group a foreign lab's PID file names, unless the PID was reused."""
    try:
        pid = int(pid_file.read_text())
        started = process_start_time(pid)
    except (FileNotFoundError, ValueError):
        return
    if pid_gone_or_zombie(pid) or started > pid_file.stat().st_mtime + 1:
        return
    log(f"stopping {pid_file.stem} (pid {pid}), left running by a lab in {pid_file.parent.parent}")
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)
        if wait_for(lambda: pid_gone_or_zombie(pid), 10, ignore=True):
            break
    pid_file.unlink(missing_ok=True)
