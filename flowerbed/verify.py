"""Health: Flower answers /healthcheck on its socket and sees the broker's workers.

Checked on every run, as a fact: a healthy Flower is "no change"; an unhealthy one fails its
host with the problem and the last lines of its journal. After a (re)start the check waits
for Flower to come up (flower_healthcheck_timeout).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy, operation
from pyinfra.operations import files

from .firewall import LoadedRulesetDigest, ruleset
from .nginx import Dashboard
from .settings import Flower, FlowerOptions, Settings
from .shell import command
from .tls import LIVE_DIR

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
        healthy(f"Flower is healthy and sees {len(report['workers'])} worker(s)")
        return
    yield FunctionCommand(_report_unhealthy, (report or {},), {})


def _report_unhealthy(state, host, report: dict) -> bool:
    host.log_styled(
        f"Flower is unhealthy: {report.get('problem', 'no report from the health check')}",
        fg="red",
        log_func=logger.error,
    )
    # already redacted on the host (files/flower-healthcheck): the fact's output is printed at
    # -vvv before it gets here, so masking it here would be too late
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


# --- the verify run (verify.py): every layer's health, changing nothing ---------------------

CERT_WARN_DAYS = 14  # certbot renews at 30 days left: under 14 means renewal is failing


class EdgeHealth(FactBase):
    """nginx's and the certificate's state, one `key=value` line each."""

    def command(self, fqdn: str, base: str, cert: str) -> StringCommand:
        checks = [
            ("nginx", ["systemctl", "is-active", "--quiet", "nginx"]),
            ("nginx_config", ["nginx", "-t", "-q"]),
            ("certificate", ["openssl", "x509", "-noout", "-in", cert,
                             "-checkend", str(CERT_WARN_DAYS * 86400)]),
            ("https", ["curl", "-sf", "-o", "/dev/null", "--max-time", "10", "-k",
                       "--resolve", f"{fqdn}:443:127.0.0.1", f"https://{fqdn}{base}healthcheck"]),
        ]  # fmt: skip
        lines = [
            f"{shlex.join(argv)} >/dev/null 2>&1 && echo {key}=ok || echo {key}=failed"
            for key, argv in checks
        ]
        return StringCommand("; ".join(lines))

    def process(self, output: list[str]) -> dict[str, bool]:
        return {k: v == "ok" for k, _, v in (line.partition("=") for line in output)}


EDGE_PROBLEMS = {
    "nginx": "nginx is not running",
    "nginx_config": "nginx's configuration fails `nginx -t`",
    "certificate": f"the certificate is missing or expires within {CERT_WARN_DAYS} days "
    "(is certbot.timer renewing?)",
    "https": "https://<fqdn>/healthcheck does not answer on the host",
}


@operation(is_idempotent=True)
def edge_healthy(fqdn: str, base: str, cert: str):
    """nginx runs a valid configuration and serves a certificate that is not about to expire."""
    if not state.is_executing:
        host.noop("the edge's health is checked when the run executes")
        return
    report = host.get_fact(EdgeHealth, fqdn=fqdn, base=base, cert=cert)
    problems = [text for key, text in EDGE_PROBLEMS.items() if not report.get(key)]
    if not problems:
        healthy(f"nginx serves https://{fqdn}{base} with a certificate valid for 14+ days")
        return
    yield FunctionCommand(_report_problems, ("edge", problems), {})


@operation(is_idempotent=True)
def firewall_loaded(digest: str):
    """flowerbed's nftables table is loaded and is the one the settings describe."""
    if not state.is_executing:
        host.noop("the firewall is checked when the run executes")
        return
    loaded = host.get_fact(LoadedRulesetDigest)
    if loaded == digest:
        healthy("the firewall table is loaded and up to date")
        return
    problem = "no flowerbed table is loaded" if loaded is None else "a different table is loaded"
    yield FunctionCommand(_report_problems, ("firewall", [f"{problem}: run the deploy"]), {})


def healthy(message: str) -> None:
    """Nothing to change: say what was found, shown without -v (a verify run reports it)."""
    host.noop(message)
    host.log_styled(message, fg="green", log_func=logger.info)


def _report_problems(state, host, layer: str, problems: list[str]) -> bool:
    for problem in problems:
        host.log_styled(f"{layer}: {problem}", fg="red", log_func=logger.error)
    return False


@deploy("Verify host")
def verify_host(settings: Settings, site: Dashboard) -> None:
    """Every layer's health on this host, reported per host; a verify run changes nothing."""
    flower_healthy(
        name="Flower answers on its socket and sees the workers",
        argv=tuple(healthcheck_argv(settings.flower, settings.options)),
    )
    edge_healthy(
        name="nginx serves the dashboard with a valid certificate",
        fqdn=site.fqdn,
        base=site.base,
        cert=f"{LIVE_DIR}/fullchain.pem",
    )
    firewall_loaded(
        name="The firewall table is loaded and current",
        digest=ruleset(settings.firewall).digest,
    )
