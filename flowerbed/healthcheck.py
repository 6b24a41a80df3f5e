"""Health: Flower answers /healthcheck on its socket and sees the broker's workers.

Checked as a fact: a healthy Flower is "no change"; an unhealthy one fails its host with the
problem and the last lines of its journal. After a (re)start the check waits for Flower to come
up (flower_healthcheck_timeout). The whole deploy checks only after an operation changed the
host or when Flower's unit is not running, so its drift check stays one round trip; the health
check alone (deploy_health_check) always checks, and verify.py checks a quiet fleet
(flowerbed.verify).
"""

from __future__ import annotations

import json

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FunctionCommand, deploy, operation

from . import facts
from .hostfiles import PathStates, root_file
from .proxy_login import env_files
from .resources import HOST_SCRIPTS
from .settings import FlowerRun
from .shell import command
from .units import UnitStates, full_name, unit_state

HEALTHCHECK_SCRIPT = HOST_SCRIPTS / "flower-healthcheck"
HEALTHCHECK_PATH = "/usr/local/libexec/flowerbed/flower-healthcheck"
# left by a failed check, removed by a passing one: a run that changes nothing checks again
UNHEALTHY_MARKER = "/var/lib/flowerbed/flower-unhealthy"


def healthcheck_argv(run: FlowerRun) -> list[str]:
    flower, options = run.flower, run.options
    return [
        HEALTHCHECK_PATH,
        f"--socket={flower.socket}",
        f"--prefix={options.url_prefix}",
        f"--unit={flower.unit_name}",
        *(f"--env-file={path}" for path in env_files(flower, run.auth.mode)),
        f"--min-workers={flower.healthcheck_min_workers}",
        f"--timeout={flower.healthcheck_timeout}",
        f"--unhealthy-marker={UNHEALTHY_MARKER}",
    ]


class FlowerHealth(FactBase):
    """The health script's report: {"ok", "problem", "workers", "journal"}."""

    def command(self, argv: tuple[str, ...]):
        return command(*argv)

    def process(self, output: list[str]) -> dict:
        return json.loads("\n".join(output))


@operation(is_idempotent=True)
def flower_healthy(argv: tuple[str, ...], unit: str, after_changes_only: bool = False):
    """Flower is healthy; otherwise this host fails with the reason and Flower's journal.
    `after_changes_only`: skipped when no operation changed the host and `unit` runs."""
    if not state.is_executing:
        host.noop("Flower's health is checked when the deploy runs")
        return
    if after_changes_only and quiet_and_running(unit):
        healthy(f"nothing changed, {unit} is running, no failed check: verify.py checks its health")
        return
    report = host.get_fact(FlowerHealth, argv=argv)
    if report and report["ok"]:
        healthy(f"Flower is healthy and sees {len(report['workers'])} worker(s)")
        return
    yield FunctionCommand(_report_unhealthy, (report or {},), {})


def quiet_and_running(unit: str) -> bool:
    """No operation changed the host in this run, `unit` runs and the last check passed."""
    if facts.changed_operations() or not unit_state(unit)["running"]:
        return False
    return (
        facts.ask(PathStates, paths=(UNHEALTHY_MARKER,), digests=False).get(UNHEALTHY_MARKER)
        is None
    )


def _report_unhealthy(state, host, report: dict) -> bool:
    problem = report.get("problem", "no report from the health check")
    log_unhealthy(host, f"Flower is unhealthy: {problem}", report)
    return False


def log_unhealthy(host, message: str, report: dict) -> None:
    """Log a failed health check: the message, then the journal tail it brought back."""
    host.log_styled(message, fg="red", log_func=logger.error)
    # already redacted on the host (files/flower-healthcheck): the fact's output is printed at
    # -vvv before it gets here, so masking it here would be too late
    for line in report.get("journal", []):
        host.log(f"  journal: {line}", log_func=logger.error)


@deploy("Verify Flower")
def verify_flower(run: FlowerRun, after_changes_only: bool = False) -> None:
    """Flower's health check; `after_changes_only`: not on a run that changed nothing while
    Flower's unit runs (the whole deploy's way: its drift check stays one round trip)."""
    root_file("Flower's health check script", HEALTHCHECK_SCRIPT, HEALTHCHECK_PATH, "755")
    facts.expect(UnitStates, units=(full_name(run.flower.unit_name),))
    facts.expect(PathStates, paths=(UNHEALTHY_MARKER,), digests=False)
    flower_healthy(
        name="Flower answers on its socket and sees the workers",
        argv=tuple(healthcheck_argv(run)),
        unit=run.flower.unit_name,
        after_changes_only=after_changes_only,
    )


def healthy(message: str) -> None:
    """Nothing to change: say what was found, shown without -v (a verify run reports it)."""
    host.noop(message)
    host.log_styled(message, fg="green", log_func=logger.info)
