"""The lab's state for tools and tests (.lab/state.json), its secrets (.lab/lab.env, 0600) and
its lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets

from .config import (
    ALLOWED_SOURCES,
    BRIDGE,
    DOMAIN,
    GATEWAY,
    LAB,
    NAMESPACES,
    NETWORK,
    PROXY_PORT,
    REDIS_PORT,
    SECRETS,
    SSH_KEY,
    STATE,
)


def load_state() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"hosts": []}


def save_state(state: dict) -> None:
    LAB.mkdir(parents=True, exist_ok=True)
    state.update(
        {
            "ssh_key": str(SSH_KEY),
            "bridge": {"name": BRIDGE, "address": GATEWAY, "cidr": str(NETWORK)},
            "domain": DOMAIN,
            "proxy": f"http://{GATEWAY}:{PROXY_PORT}",
            "broker": {
                "url_env": "FLOWERBED_BROKER_URL",
                "address": f"{GATEWAY}:{REDIS_PORT}",
            },
            "secrets_file": str(SECRETS),
            "namespaces": NAMESPACES,
            "allowed_sources": ALLOWED_SOURCES,
        }
    )
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(STATE)


def lab_secrets() -> dict:
    """The lab's own secrets, made once: the broker password and a dashboard login."""
    values = {}
    if SECRETS.exists():
        for line in SECRETS.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                values[key] = value
    if "FLOWERBED_BROKER_URL" not in values:
        password = secrets.token_urlsafe(24)
        values["FLOWERBED_BROKER_URL"] = f"redis://:{password}@{GATEWAY}:{REDIS_PORT}/0"
        values["FLOWERBED_DASHBOARD_USERS"] = f"admin:{secrets.token_urlsafe(18)}"
        SECRETS.touch(mode=0o600)
        SECRETS.write_text(
            "# The lab's secrets (made by lab/lab.py up; never commit)\n"
            + "".join(f"{k}={v}\n" for k, v in values.items())
        )
    return values


@contextlib.contextmanager
def lab_lock():
    """One lab command at a time: tests and people share the lab and its state file."""
    LAB.mkdir(parents=True, exist_ok=True)
    with open(LAB / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
