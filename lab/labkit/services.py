"""The services on the bridge: tinyproxy, the lab's DNS and pebble (ACME); the Celery side is
celery_lab."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from .config import (
    ACME_MANAGEMENT_PORT,
    ACME_PORT,
    DNS_MANAGEMENT_PORT,
    DNS_PORT,
    GATEWAY,
    LAB,
    NETWORK,
    PROXY_PORT,
    RUN,
)
from .process import pid_alive, port_open, run, spawn, wait_for


def ensure_proxy() -> None:
    if pid_alive("tinyproxy"):
        return
    conf = RUN / "tinyproxy.conf"
    conf.write_text(
        f"Port {PROXY_PORT}\nListen {GATEWAY}\nTimeout 600\nMaxClients 100\nLogLevel Warning\n"
        f"Allow {NETWORK}\nConnectPort 443\nDisableViaHeader Yes\n"
    )
    spawn("tinyproxy", ["tinyproxy", "-d", "-c", str(conf)])
    wait_for(lambda: port_open(GATEWAY, PROXY_PORT), 10, what="tinyproxy")


def ensure_dns() -> None:
    if pid_alive("dns"):
        return
    spawn(
        "dns",
        [
            "pebble-challtestsrv",
            "-defaultIPv4",
            "",
            "-defaultIPv6",
            "",
            "-dns01",
            f"{GATEWAY}:{DNS_PORT}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"{GATEWAY}:{DNS_MANAGEMENT_PORT}",
        ],
    )
    wait_for(lambda: port_open(GATEWAY, DNS_MANAGEMENT_PORT), 10, what="the lab's DNS")


def publish_dns(hosts: list[dict]) -> None:
    """A records for every host's name in the lab's DNS (used by pebble's validation)."""
    api = f"http://{GATEWAY}:{DNS_MANAGEMENT_PORT}"
    for host in hosts:
        name = host["fqdn"] + "."
        for path, body in (
            ("clear-a", {"host": name}),
            ("add-a", {"host": name, "addresses": [host["address"]]}),
        ):
            urllib.request.urlopen(f"{api}/{path}", json.dumps(body).encode(), timeout=5)


def ensure_acme() -> dict:
    acme = LAB / "acme"
    acme.mkdir(parents=True, exist_ok=True)
    ca, cert, key = acme / "ca.pem", acme / "cert.pem", acme / "key.pem"
    if not cert.exists():
        make_acme_listener_cert(acme)
    config = acme / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{GATEWAY}:{ACME_PORT}",
                    "managementListenAddress": f"{GATEWAY}:{ACME_MANAGEMENT_PORT}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": 80,
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    root = acme / "root.pem"
    if not pid_alive("pebble"):
        spawn(
            "pebble",
            ["pebble", "-config", str(config), "-dnsserver", f"{GATEWAY}:{DNS_PORT}"],
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            cwd=acme,
        )
        wait_for(lambda: port_open(GATEWAY, ACME_MANAGEMENT_PORT), 15, what="pebble")
        root.unlink(missing_ok=True)  # pebble makes a new issuing root at every start
    if not root.exists():
        run(
            [
                "curl",
                "-sSf",
                "--cacert",
                str(ca),
                "-o",
                str(root),
                f"https://{GATEWAY}:{ACME_MANAGEMENT_PORT}/roots/0",
            ]
        )
    return {
        "directory": f"https://{GATEWAY}:{ACME_PORT}/dir",
        "ca_bundle": str(ca),
        "root": str(root),
        "dns_management": f"http://{GATEWAY}:{DNS_MANAGEMENT_PORT}",
    }


def make_acme_listener_cert(acme: Path, address: str = GATEWAY) -> None:
    """A CA and a server certificate for pebble's own HTTPS listener on the bridge (or for
    another lab listener at `address`)."""
    openssl = ["openssl", "req", "-nodes", "-newkey", "rsa:2048"]
    run(
        [
            *openssl,
            "-x509",
            "-days",
            "3650",
            "-subj",
            "/CN=flowerbed lab ACME listener CA",
            # Python 3.13 (Debian 13) verifies strictly (VERIFY_X509_STRICT): a CA without key
            # usage is refused, so Flower's OAuth client on trixie could not reach the lab's OIDC
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            str(acme / "ca.key"),
            "-out",
            str(acme / "ca.pem"),
        ]
    )
    run(
        [
            *openssl,
            "-subj",
            f"/CN={address}",
            "-keyout",
            str(acme / "key.pem"),
            "-out",
            str(acme / "csr.pem"),
        ]
    )
    (acme / "ext.cnf").write_text(
        f"subjectAltName=IP:{address},DNS:localhost\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-days",
            "3650",
            "-in",
            str(acme / "csr.pem"),
            "-CA",
            str(acme / "ca.pem"),
            "-CAkey",
            str(acme / "ca.key"),
            "-CAcreateserial",
            "-extfile",
            str(acme / "ext.cnf"),
            "-out",
            str(acme / "cert.pem"),
        ]
    )
