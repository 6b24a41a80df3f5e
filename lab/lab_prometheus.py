#!/usr/bin/env python3
"""The lab's Prometheus: Debian's prometheus and blackbox exporter, run as lab processes.

It scrapes lab hosts the way a production Prometheus would (monitoring/prometheus.example.yml):
from the lab machine (10.77.0.1, the lab's monitoring source) through nginx at
https://<fqdn>/metrics, and probes https://<fqdn>/healthcheck for the certificate, trusting
pebble's issuing root. It loads monitoring/flowerbed.rules.yml rendered with the lab's
overrides (shorter `for:` so tests stay quick). Started on demand, not by `lab.py up`:

    .venv/bin/python lab/lab_prometheus.py up h1 h2 [--set workers_missing_for=10s ...]
    .venv/bin/python lab/lab_prometheus.py down

Prometheus answers on http://10.77.0.1:9090 (also in .lab/state.json under "prometheus").
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from labkit.config import GATEWAY, LAB, REPO
from labkit.process import pid_alive, port_open, signal_process, spawn, stop, wait_for
from labkit.state import lab_lock, load_state, save_state

sys.path.insert(0, str(REPO / "monitoring"))
import render_rules  # noqa: E402

HOME = LAB / "prometheus"
PORT = 9090
BLACKBOX_PORT = 9115
URL = f"http://{GATEWAY}:{PORT}"
INTERVAL = "5s"
# The lab's overrides of the rules' defaults: tests see alerts within seconds, and the lab's
# producer (which fails about one task in ten on purpose) stays under the failure ratio.
LAB_RULES = {
    "workers_missing_for": "10s",
    "failure_window": "1m",
    "failure_ratio": "0.5",
    "failure_min_tasks": "5",
    "failure_for": "10s",
    "stuck_after": "45s",  # longer than the producer's longest sleep (30 s)
    "stuck_for": "5s",
    "flower_down_for": "30s",
}


def config(acme_root: str) -> dict:
    tls = {"ca_file": acme_root}
    return {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(HOME / "flowerbed.rules.yml")],
        "scrape_configs": [
            {
                "job_name": "flower",
                "scheme": "https",
                "metrics_path": "/metrics",
                "tls_config": tls,
                "file_sd_configs": [{"files": [str(HOME / "flower-targets.json")]}],
            },
            {
                "job_name": "flower-tls",
                "metrics_path": "/probe",
                "params": {"module": ["flowerbed_https"]},
                "file_sd_configs": [{"files": [str(HOME / "probe-targets.json")]}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": f"127.0.0.1:{BLACKBOX_PORT}"},
                ],
            },
        ],
    }


def blackbox_config(acme_root: str) -> dict:
    http = {
        "method": "GET",
        "valid_status_codes": [200],
        "fail_if_not_ssl": True,
        "preferred_ip_protocol": "ip4",
        "tls_config": {"ca_file": acme_root},
    }
    return {"modules": {"flowerbed_https": {"prober": "http", "timeout": "5s", "http": http}}}


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)  # file_sd watches the file: replace it in one step
    return True


def ensure_prometheus(hosts: list[dict], rules: dict[str, str] | None = None) -> str:
    """Prometheus and the blackbox exporter running, scraping `hosts`, with the lab's rules."""
    state = load_state()
    root = state["acme"]["root"]
    HOME.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: the configs need no YAML library
    write_if_changed(HOME / "blackbox.yml", json.dumps(blackbox_config(root), indent=1))
    config_changed = write_if_changed(HOME / "prometheus.yml", json.dumps(config(root), indent=1))
    rules_changed = write_if_changed(
        HOME / "flowerbed.rules.yml", render_rules.render({**LAB_RULES, **(rules or {})})
    )
    write_if_changed(
        HOME / "flower-targets.json",
        json.dumps([{"targets": [h["fqdn"] for h in hosts]}]),
    )
    write_if_changed(
        HOME / "probe-targets.json",
        json.dumps([{"targets": [f"https://{h['fqdn']}/healthcheck" for h in hosts]}]),
    )
    stop_debian_services()
    if not pid_alive("blackbox"):
        spawn(
            "blackbox",
            [
                "prometheus-blackbox-exporter",
                f"--config.file={HOME / 'blackbox.yml'}",
                f"--web.listen-address=127.0.0.1:{BLACKBOX_PORT}",
            ],
        )
    pid = pid_alive("prometheus")
    if pid and (config_changed or rules_changed):
        signal_process(pid, 1)  # SIGHUP: reload config and rules
    elif not pid:
        shutil.rmtree(HOME / "data", ignore_errors=True)  # no alert state from an earlier run
        spawn(
            "prometheus",
            [
                "prometheus",
                f"--config.file={HOME / 'prometheus.yml'}",
                f"--storage.tsdb.path={HOME / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={GATEWAY}:{PORT}",
            ],
        )
    wait_for(lambda: ready(), 30, what="the lab's Prometheus")
    wait_for(lambda: port_open("127.0.0.1", BLACKBOX_PORT), 10, what="blackbox exporter")
    with lab_lock():
        state = load_state()
        state["prometheus"] = {"url": URL, "config": str(HOME / "prometheus.yml")}
        save_state(state)
    return URL


def ready() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_debian_services() -> None:
    """Debian starts its packaged services where it can; the lab runs its own instances."""
    for service in ("prometheus", "prometheus-blackbox-exporter"):
        subprocess.run(["service", service, "stop"], capture_output=True)


def stop_prometheus() -> None:
    for name in ("prometheus", "blackbox"):
        stop(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Prometheus scraping these lab hosts (default: all)")
    up.add_argument("hosts", nargs="*")
    up.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("down", help="stop the lab's Prometheus")
    args = parser.parse_args(argv)
    if args.command == "down":
        stop_prometheus()
        return 0
    known = load_state()["hosts"]
    hosts = [h for h in known if not args.hosts or h["name"] in args.hosts]
    print(ensure_prometheus(hosts, render_rules.parse_sets(args.set)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
