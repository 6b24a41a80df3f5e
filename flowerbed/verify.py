"""Health: Flower answers /healthcheck on its socket and sees the broker's workers.

Checked on every run, as a fact: a healthy Flower is "no change"; an unhealthy one fails its
host with the problem and the last lines of its journal. After a (re)start the check waits
for Flower to come up (flower_healthcheck_timeout).
"""

from __future__ import annotations

import json
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FunctionCommand, deploy, operation
from pyinfra.operations import files

from .settings import Flower, FlowerOptions, Settings
from .shell import command

HEALTHCHECK_SCRIPT = Path(__file__).resolve().parent.parent / "files" / "flower-healthcheck"
HEALTHCHECK_PATH = "/usr/local/libexec/flowerbed/flower-healthcheck"


def healthcheck_argv(flower: Flower, options: FlowerOptions) -> list[str]:
    return [
        HEALTHCHECK_PATH,
        f"--socket={flower.socket}",
        f"--prefix={options.url_prefix}",
        f"--unit={flower.unit_name}",
        f"--env-file={flower.env_file}",
        f"--min-workers={flower.healthcheck_min_workers}",
        f"--timeout={flower.healthcheck_timeout}",
    ]


class FlowerHealth(FactBase):
    """The health script's report: {"ok", "problem", "workers", "journal"}."""

    def command(self, argv: tuple[str, ...]):
        return command(*argv)

    def process(self, output: list[str]) -> dict:
        return json.loads("\n".join(output))


@operation(is_idempotent=True)
def flower_healthy(argv: tuple[str, ...]):
    """Flower is healthy; otherwise this host fails with the reason and Flower's journal."""
    if not state.is_executing:
        host.noop("Flower's health is checked when the deploy runs")
        return
    report = host.get_fact(FlowerHealth, argv=argv)
    if report and report["ok"]:
        host.noop(f"Flower is healthy and sees {len(report['workers'])} worker(s)")
        return
    yield FunctionCommand(_report_unhealthy, (report or {},), {})


def _report_unhealthy(state, host, report: dict) -> bool:
    host.log_styled(
        f"Flower is unhealthy: {report.get('problem', 'no report from the health check')}",
        fg="red",
        log_func=logger.error,
    )
    for line in report.get("journal", []):
        host.log(f"  journal: {line}", log_func=logger.error)
    return False


@deploy("Verify Flower")
def verify_flower(settings: Settings) -> None:
    files.put(
        name="Flower's health check script",
        src=str(HEALTHCHECK_SCRIPT),
        dest=HEALTHCHECK_PATH,
        user="root",
        group="root",
        mode="755",
    )
    flower_healthy(
        name="Flower answers on its socket and sees the workers",
        argv=tuple(healthcheck_argv(settings.flower, settings.options)),
    )
