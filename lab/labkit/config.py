"""Where the lab keeps its files, its addresses and ports, and what its images hold."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = Path(os.environ.get("FLOWERBED_LAB_DIR", REPO / ".lab"))
CACHE = Path(os.environ.get("FLOWERBED_LAB_CACHE", "/var/cache/flowerbed-lab"))
STATE = LAB / "state.json"
SECRETS = LAB / "lab.env"
RUN = LAB / "run"
HOSTS = LAB / "hosts"
SSH_KEY = LAB / "ssh" / "id_ed25519"
ACTIVE_LAB = CACHE / "active-lab"  # the .lab of the last lab brought up on this machine

BRIDGE = "fb-lab"
NETWORK = ipaddress.ip_network("10.77.0.0/24")
GATEWAY = "10.77.0.1"
BRIDGE_MAC = "02:66:62:6c:61:62"  # locally administered
DOMAIN = "flowerbed.test"
NAMESPACES = {"lab-allowed": "10.77.0.200", "lab-denied": "10.77.0.250"}
# Addresses the lab's inventory admits to HTTPS: the lab machine and lab-allowed's /27.
ALLOWED_SOURCES = ["10.77.0.1/32", "10.77.0.192/27"]
HOST_ADDRESSES = range(11, 190)
PROXY_PORT = 3128
DNS_PORT = 53
DNS_MANAGEMENT_PORT = 8055
ACME_PORT = 14000
ACME_MANAGEMENT_PORT = 15000
REDIS_PORT = 6379
DISTROS = ("bookworm", "trixie")
MIRROR = os.environ.get("FLOWERBED_LAB_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "nftables",
    "ca-certificates",
    "curl",
    "procps",
]
BASE_VERSION = "1"  # bump to rebuild cached base images when their recipe changes
MACHINE_PACKAGES = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "tinyproxy": "tinyproxy",
    "pebble": "pebble",
    "redis-server": "redis-server",
    "openssl": "openssl",
    "curl": "curl",
    "ssh": "openssh-client",
    "ip": "iproute2",
}
HOSTS_BLOCK = ("# BEGIN flowerbed-lab", "# END flowerbed-lab")
SSH_OPTIONS = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=2",
]
