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

# the operator runs' knobs are validated with every other setting; verify.py's name for them
from .settings.verify import Verify as OperatorChecks  # noqa: F401


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
