"""HTTPS requests from the operator's machine, as a browser or a monitoring system meets a host.

Used by rotate.py (does the new password get in, is the old one refused?) and verify.py (does
the dashboard answer with a login, how long is its certificate valid?). Certificates are
verified against the system's trust store, or `flower_verify_ca_bundle` when the hosts' CA is
private.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Answer:
    status: int  # 0 when no HTTP answer came (refused, timeout, TLS failure)
    body: str
    error: str = ""  # why there was no answer
    cert_days_left: float | None = None

    def json(self):
        return json.loads(self.body)


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle or None)


def https_get(
    fqdn: str,
    path: str,
    *,
    ca_bundle: str = "",
    login: tuple[str, str] | None = None,
    timeout: float = 15,
    patience: int = 3,
) -> Answer:
    """GET https://fqdn/path, verifying the certificate; never raises for a network problem.

    A 429 (nginx's per-source limits, e.g. a browser polling from the same machine) is waited
    out `patience` times.
    """
    for _ in range(patience):
        answer = _get(fqdn, path, ca_bundle, login, timeout)
        if answer.status != 429:
            break
        time.sleep(2)
    return answer


def _get(
    fqdn: str, path: str, ca_bundle: str, login: tuple[str, str] | None, timeout: float
) -> Answer:
    headers = {"Accept": "application/json"}
    if login:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    connection = http.client.HTTPSConnection(
        fqdn, 443, timeout=timeout, context=tls_context(ca_bundle)
    )
    try:
        connection.request("GET", path, headers=headers)
        days = cert_days_left(connection.sock.getpeercert())
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return Answer(response.status, body, cert_days_left=days)
    except (OSError, http.client.HTTPException) as error:
        return Answer(0, "", error=f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def cert_days_left(cert: dict | None) -> float | None:
    if not cert or "notAfter" not in cert:
        return None
    return (ssl.cert_time_to_seconds(cert["notAfter"]) - time.time()) / 86400


# --- the operator runs' own knobs (flower_verify_* in group_data/all.py) --------------------------


@dataclass(frozen=True)
class OperatorChecks:
    """What verify.py (and rotate.py's HTTPS check) expect; defaults in group_data/all.py."""

    ca_bundle: str
    summary_file: str
    cert_min_days: int
    exposure_max: float
    min_workers_online: int
    max_workers_offline: int
    max_failed_tasks: int
    max_task_seconds: int
    max_queue_length: int
    expected_tasks: tuple[str, ...]


VERIFY = "flower_verify_"  # the operator checks' data keys: VERIFY + a CHECK_TYPES name
CHECK_TYPES = {
    "ca_bundle": (str, "a path to a PEM file ('' = the system's trust store)"),
    "summary_file": (str, "a path for the JSON summary ('' = none)"),
    "cert_min_days": (int, "a number of days, e.g. 14"),
    "exposure_max": ((int, float), "a systemd-analyze security score, e.g. 1.5"),
    "min_workers_online": (int, "a number of workers, e.g. 1"),
    "max_workers_offline": (int, "a number of workers, e.g. 0"),
    "max_failed_tasks": (int, "a number of tasks, e.g. 100"),
    "max_task_seconds": (int, "a number of seconds, e.g. 1800"),
    "max_queue_length": (int, "a number of messages, e.g. 1000"),
    "expected_tasks": (list, 'a list of task names, e.g. ["proj.tasks.add"]'),
}


def operator_checks(data: dict) -> OperatorChecks:
    """The flower_verify_* knobs over their defaults, validated; a misspelt one is an error."""
    from .resources import DEFAULTS
    from .settings import SettingsError

    data = {**DEFAULTS, **data}

    unknown = sorted(
        k for k in data if k.startswith(VERIFY) and k.removeprefix(VERIFY) not in CHECK_TYPES
    )
    if unknown:
        raise SettingsError(
            unknown[0], "unknown key", f"use one of {sorted(VERIFY + k for k in CHECK_TYPES)}"
        )
    values = {}
    for name, (kind, expected) in CHECK_TYPES.items():
        key = VERIFY + name
        if key not in data:
            raise SettingsError(key, "missing", "define it with its default in group_data/all.py")
        value = data[key]
        if (
            not isinstance(value, kind)
            or isinstance(value, bool)
            or (isinstance(value, (int, float)) and value < 0)
        ):
            raise SettingsError(key, f"{value!r} is not {expected}", f"set {key} to {expected}")
        values[name] = tuple(value) if isinstance(value, list) else value
    if values["ca_bundle"] and not Path(values["ca_bundle"]).is_file():
        raise SettingsError(
            "flower_verify_ca_bundle",
            f"{values['ca_bundle']} does not exist",
            "point it at a PEM file on this machine",
        )
    return OperatorChecks(**values)
