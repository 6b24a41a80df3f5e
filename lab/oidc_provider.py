"""The lab's OpenID Connect provider, started on demand (`lab.py oidc-up`) for the OAuth tests.

panva's certified `oidc-provider` (npm, pinned in lab/oidc/package-lock.json, installed with
`npm ci`; version 8, which runs on Debian's own Node.js, 12's 18.x and 13's 20.x) on the
bridge at https://10.77.0.1:9443/oauth2 with Okta's routes, so Flower's
OktaLoginHandler uses it as it would Okta (flower_oauth2_okta_base_url = that URL). Its TLS
certificate comes from a lab CA, made like pebble's listener's; hosts trust that CA through
the deploy's own `flower_egress_ca_certificates`.

It has one client (the dashboards, redirect https://<any lab host>/login) and two users:
`alice` (alice@flowerbed.test, the one the tests let in with flower_auth) and `mallory`
(mallory@flowerbed.test, refused). Their passwords, the client secret and a cookie secret
for Flower are in .lab/lab.env; the provider's own config is .lab/oidc/config.json (0600).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from labkit.config import DOMAIN, GATEWAY, LAB, REPO, SECRETS
from labkit.process import LabError, pid_alive, port_open, run, spawn, stop, wait_for
from labkit.services import make_acme_listener_cert

PACKAGE = REPO / "lab" / "oidc"
STATE_DIR = LAB / "oidc"
PORT = 9443
ISSUER = f"https://{GATEWAY}:{PORT}/oauth2"
CLIENT_ID = "flowerbed-dashboards"
CA = STATE_DIR / "flowerbed-lab-oidc-ca.pem"  # a name of its own in the hosts' trust store
USERS = {"allowed": "alice", "refused": "mallory"}
MIN_NODE = (18, 12)  # oidc-provider 8: Debian 12 has 18.20 (18.13 unupdated), 13 20.19
NPM_CI = ["ci", "--omit=dev", "--no-audit", "--no-fund", "--ignore-scripts"]
# lab/oidc_provider.py's secrets in .lab/lab.env (the deploy reads the first two)
CLIENT_SECRET_ENV = "FLOWERBED_OAUTH2_SECRET"
COOKIE_SECRET_ENV = "FLOWERBED_COOKIE_SECRET"


def password_env(login: str) -> str:
    return f"FLOWERBED_LAB_OIDC_PASSWORD_{login.upper()}"


def ensure_oidc() -> dict:
    """Install (npm ci), configure and start the provider; return its part of the lab state."""
    node = check_node()
    if not package_current():
        stop("oidc")  # one running from the old lock, before npm ci replaces its files
        install_package()
    values = ensure_secrets()
    config = write_config(values)
    if not pid_alive("oidc"):
        spawn("oidc", [node, str(PACKAGE / "provider.mjs"), str(config)], cwd=PACKAGE)
        wait_for(lambda: port_open(GATEWAY, PORT), 20, what="the OIDC provider (.lab/run/oidc.log)")
    return {
        "issuer": ISSUER,
        "base_url": ISSUER,
        "client_id": CLIENT_ID,
        "client_secret_env": CLIENT_SECRET_ENV,
        "cookie_secret_env": COOKIE_SECRET_ENV,
        "ca": str(CA),
        "users": {
            role: {
                "login": login,
                "email": f"{login}@{DOMAIN}",
                "password_env": password_env(login),
            }
            for role, login in USERS.items()
        },
    }


def stop_oidc() -> None:
    stop("oidc")


def check_node() -> str:
    node = shutil.which("node")
    if not node:
        raise LabError("the OIDC provider needs Node.js (`node`): `apt install nodejs npm`")
    version = run([node, "--version"]).stdout.strip().lstrip("v")
    if tuple(int(part) for part in version.split(".")[:2]) < MIN_NODE:
        raise LabError(
            f"the OIDC provider needs Node.js >= {'.'.join(map(str, MIN_NODE))}, found {version}: "
            "install Debian's nodejs (12 and 13 have one new enough)"
        )
    return node


def lock_stamp() -> tuple[Path, str]:
    """The stamp `npm ci` leaves in node_modules, and the hash it must hold: the committed
    lock's and provider.mjs's (a provider running either's old version is restarted)."""
    sources = (PACKAGE / name for name in ("package-lock.json", "provider.mjs"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    return PACKAGE / "node_modules" / ".flowerbed-lock-sha256", digest


def package_current() -> bool:
    stamp, digest = lock_stamp()
    return stamp.exists() and stamp.read_text() == digest


def install_package() -> None:
    """`npm ci` from the committed lock; the stamp then holds the lock's hash."""
    npm = shutil.which("npm")
    if not npm:
        raise LabError(
            "the OIDC provider is installed with npm: `apt install npm` (`make machine-packages`)"
        )
    result = subprocess.run(
        [npm, *NPM_CI],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise LabError(f"npm ci in {PACKAGE} failed ({result.returncode}): {result.stderr[-2000:]}")
    stamp, digest = lock_stamp()
    stamp.write_text(digest)


def ensure_secrets() -> dict[str, str]:
    """Add the provider's secrets to .lab/lab.env (0600) once; keep the ones already there."""
    lines = SECRETS.read_text().splitlines() if SECRETS.exists() else []
    values = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
    wanted = [CLIENT_SECRET_ENV, COOKIE_SECRET_ENV, *(password_env(u) for u in USERS.values())]
    missing = {name: secrets.token_urlsafe(32) for name in wanted if name not in values}
    if missing:
        SECRETS.touch(mode=0o600)
        with SECRETS.open("a") as out:
            out.writelines(f"{name}={value}\n" for name, value in missing.items())
    return {**values, **missing}


def provider_config(
    issuer: str, listen: str, tls: Path, values: dict[str, str], users: Iterable[str]
) -> dict:
    """provider.mjs's config: its issuer, where it listens, its TLS files in `tls` (cert.pem,
    key.pem), the dashboards' client and the users with their passwords from `values`."""
    return {
        "issuer": issuer,
        "host": listen,
        "port": PORT,
        "cert": str(tls / "cert.pem"),
        "key": str(tls / "key.pem"),
        "client": {
            "id": CLIENT_ID,
            "secret": values[CLIENT_SECRET_ENV],
            "example_redirect_uri": f"https://h1.{DOMAIN}/login",
            "redirect_uri_pattern": rf"^https://[a-z][a-z0-9-]*\.{re.escape(DOMAIN)}/login$",
        },
        "users": [
            {"login": login, "password": values[password_env(login)], "email": f"{login}@{DOMAIN}"}
            for login in users
        ],
    }


def write_config(values: dict[str, str]) -> str:
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (STATE_DIR / "cert.pem").exists():
        make_acme_listener_cert(STATE_DIR)  # a lab CA and a certificate for the bridge address
        shutil.copy(STATE_DIR / "ca.pem", CA)
    config = provider_config(ISSUER, GATEWAY, STATE_DIR, values, USERS.values())
    path = STATE_DIR / "config.json"
    path.touch(mode=0o600)
    path.chmod(0o600)
    text = json.dumps(config, indent=2)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        stop("oidc")  # a changed config needs a restart
    return str(path)
