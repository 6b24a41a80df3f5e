"""The lab's hosts. `make lab-up` writes .lab/state.json; this file reads it.

    pyinfra inventory/lab.py deploy.py            # every lab host
    pyinfra inventory/lab.py deploy.py --limit h1

Groups: `lab` (every host, after this file's name), `bookworm` and `trixie` (by distro).
The lab's secrets (the broker URL with its password, the dashboard login) come from
.lab/lab.env, used the way an operator's .env is ($FLOWERBED_ENV_FILE): they never enter host data.

Hosts use the lab's Redis. To point one at the lab's RabbitMQ (`python3 lab/lab_rabbitmq.py up`;
addresses in .lab/state.json under "rabbitmq", its URLs in .lab/lab.env), name its variables:

    pyinfra inventory/lab.py deploy.py --limit h2 \
        --data flower_broker_url_env=FLOWERBED_RABBITMQ_URL \
        --data flower_broker_api_env=FLOWERBED_RABBITMQ_API
"""

import json
import os
from pathlib import Path

_lab_state_file = Path(__file__).resolve().parent.parent / ".lab" / "state.json"
if not _lab_state_file.exists():
    raise SystemExit(f"inventory/lab.py: {_lab_state_file} is missing: run `make lab-up` first")
_lab = json.loads(_lab_state_file.read_text())
# the lab's secrets file plays the operator's .env: the deploy loads it (what is already in the
# environment wins), and rotate.py writes rotated passwords back into it
os.environ.setdefault("FLOWERBED_ENV_FILE", _lab["secrets_file"])

_lab_data = {
    "ssh_user": "root",
    "ssh_key": _lab["ssh_key"],
    # lab hosts are re-created with new host keys; real inventories pin known_hosts
    "ssh_strict_host_key_checking": "no",
    "ssh_known_hosts_file": "/dev/null",
    # the lab's hosts reach PyPI only through the lab's proxy, like hosts behind an egress proxy
    "flower_egress_proxy": _lab["proxy"],
    # TLS from the lab's ACME CA (pebble); its listener's CA is uploaded for certbot
    "flower_tls_acme_directory": _lab["acme"]["directory"],
    "flower_tls_acme_ca_bundle": _lab["acme"]["ca_bundle"],
    # the firewall: the lab machine and lab-allowed's /27 reach HTTPS; the lab machine is the
    # operator (SSH) and the monitoring system (/metrics)
    "flower_allowed_sources": _lab["allowed_sources"],
    "flower_admin_sources": [f"{_lab['bridge']['address']}/32"],
    "flower_monitoring_sources": [f"{_lab['bridge']['address']}/32"],
    # verify.py and rotate.py check the dashboards over HTTPS from here: trust the lab's CA
    "flower_verify_ca_bundle": _lab["acme"]["root"],
    # the demo producer makes about 300 tasks an hour fail on purpose
    "flower_verify_max_failed_tasks": 1000,
}


def _lab_host(host: dict) -> tuple[str, dict]:
    return host["name"], {**_lab_data, "ssh_hostname": host["address"], "flower_fqdn": host["fqdn"]}


bookworm = [_lab_host(h) for h in _lab["hosts"] if h["distro"] == "bookworm"]
trixie = [_lab_host(h) for h in _lab["hosts"] if h["distro"] == "trixie"]
