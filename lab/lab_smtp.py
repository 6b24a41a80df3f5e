#!/usr/bin/env python3
"""The lab's SMTP inbox: aiosmtpd on the bridge with STARTTLS and a login, keeping every mail.

What the monitoring part's Alertmanager sends to in the lab (tests/lab/test_alert_delivery.py).
It listens on 10.77.0.1:2525, offers STARTTLS with a certificate of its own CA
(.lab/smtp/ca.pem: hosts trust it through flower_monitoring_smtp_ca_bundle) and AUTH
PLAIN/LOGIN only after STARTTLS, for the user `alerts` with the password given to `up` through
$FLOWERBED_LAB_SMTP_PASSWORD (the environment, never a command line). Each accepted mail is kept
as .lab/smtp/inbox/<time>-<n>.eml (0600); a wrong login is refused (535) and counted in
.lab/smtp/refused. Started on demand, not by `lab.py up`:

    FLOWERBED_LAB_SMTP_PASSWORD=... .venv/bin/python lab/lab_smtp.py up
    .venv/bin/python lab/lab_smtp.py down
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

from labkit.config import GATEWAY, LAB, REPO
from labkit.process import port_open, run, spawn, stop, wait_for

HOME = LAB / "smtp"
INBOX = HOME / "inbox"
REFUSED = HOME / "refused"
CA, CERT, KEY = HOME / "ca.pem", HOME / "cert.pem", HOME / "key.pem"
PORT = 2525
USER = "alerts"
PASSWORD_VARIABLE = "FLOWERBED_LAB_SMTP_PASSWORD"
PYTHON = str(REPO / ".venv" / "bin" / "python")


def make_certificate() -> None:
    """A CA and the server's certificate for the gateway's address (Alertmanager checks it)."""
    HOME.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key = HOME / "ca.key"
    openssl = ["openssl", "req", "-nodes", "-newkey", "rsa:2048"]
    run([*openssl, "-x509", "-days", "3650", "-subj", "/CN=flowerbed lab SMTP CA",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-keyout", str(ca_key), "-out", str(CA)])  # fmt: skip
    csr = HOME / "csr.pem"
    run([*openssl, "-subj", f"/CN={GATEWAY}", "-keyout", str(KEY), "-out", str(csr)])
    ext = HOME / "ext.cnf"
    ext.write_text(
        f"subjectAltName=IP:{GATEWAY}\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    sign = ["openssl", "x509", "-req", "-days", "3650", "-in", str(csr), "-CA", str(CA)]
    run([*sign, "-CAkey", str(ca_key), "-CAcreateserial", "-extfile", str(ext), "-out", str(CERT)])


def ensure_smtp(password: str) -> dict:
    """The inbox running with this password (restarted if it ran with another)."""
    if not CERT.exists():
        make_certificate()
    INBOX.mkdir(parents=True, exist_ok=True, mode=0o700)
    stop("smtp")  # the password may have changed: a running inbox keeps the one it started with
    spawn(
        "smtp", [PYTHON, str(Path(__file__).resolve()), "serve"], env={PASSWORD_VARIABLE: password}
    )
    wait_for(lambda: port_open(GATEWAY, PORT), 15, what="the lab's SMTP inbox")
    return {"smarthost": f"{GATEWAY}:{PORT}", "ca": str(CA), "user": USER, "inbox": str(INBOX)}


def mails() -> list[dict]:
    """Every mail received so far, oldest first: {"subject", "to", "body", "path"}."""
    found = []
    for path in sorted(INBOX.glob("*.eml")):
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        body = message.get_body(("plain",))
        found.append(
            {
                "subject": str(message["subject"] or ""),
                "to": str(message["to"] or ""),
                "body": body.get_content() if body else "",
                "path": str(path),
            }
        )
    return found


def refused_logins() -> int:
    return int(REFUSED.read_text()) if REFUSED.exists() else 0


def serve() -> None:
    import threading

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    password = os.environ.pop(PASSWORD_VARIABLE).encode()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(CERT, KEY)
    counter = iter(range(10**9))

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (
            auth_data.login == USER.encode() and auth_data.password == password
        )
        if not ok:
            REFUSED.write_text(str(refused_logins() + 1))
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 235 or 535

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            name = INBOX / f"{time.time():.6f}-{next(counter)}.eml"
            staging = name.with_suffix(".tmp")
            staging.touch(mode=0o600)
            staging.write_bytes(envelope.original_content or envelope.content)
            staging.rename(name)
            return "250 kept"

    controller = Controller(
        Keep(),
        hostname=GATEWAY,
        port=PORT,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
        # aiosmtpd's LOGIN asks "User Name", where mail servers ask "Username:" (Alertmanager,
        # like most clients, accepts only that): PLAIN, as every server offers it
        auth_exclude_mechanism=["LOGIN"],
    )
    controller.start()
    print(f"lab SMTP inbox on {GATEWAY}:{PORT}", flush=True)
    try:
        threading.Event().wait()  # the controller serves in its own thread; SIGTERM ends it
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help=f"start the inbox; the password in ${PASSWORD_VARIABLE}")
    sub.add_parser("down", help="stop it")
    sub.add_parser("serve", help="(run by `up`)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve()
    elif args.command == "down":
        stop("smtp")
    else:
        print(ensure_smtp(os.environ[PASSWORD_VARIABLE])["smarthost"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
