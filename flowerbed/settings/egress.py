"""How hosts reach package registries: an HTTP(S) proxy, extra CAs, a PyPI mirror."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

from cryptography import x509

from ..resources import is_local_file, local_path
from ..validation import SettingsError
from .checks import setting, string_list, text, url

if TYPE_CHECKING:
    from . import Settings


@dataclass(frozen=True)
class Egress:
    """How hosts reach package registries (the lab's hosts: only via an HTTP proxy)."""

    egress_proxy: str = setting(url(("http", "https")))
    egress_ca_certificates: tuple[str, ...] = setting(
        string_list(text(r".+\.(pem|crt)", "a .pem/.crt path"))
    )
    pip_index_url: str = setting(url(("http", "https")))

    prefix = "flower_"


def check_egress(s: Settings) -> Iterator[SettingsError]:
    """Every extra CA is a file here holding one PEM certificate and nothing else (it is
    uploaded world-readable to every host), and no two land on the same host file."""
    stems: dict[str, int] = {}
    for i, certificate in enumerate(s.egress.egress_ca_certificates):
        key = f"flower_egress_ca_certificates[{i}]"
        if not is_local_file(certificate):
            yield SettingsError(
                key,
                f"{certificate} is not a file",
                "give the path of a PEM file, absolute or relative to where pyinfra runs",
            )
            continue
        if problem := ca_certificate_problem(local_path(certificate).read_bytes()):
            yield SettingsError(
                key,
                f"{certificate} {problem}",
                "give the CA's certificate alone: one -----BEGIN CERTIFICATE----- block, e.g. "
                "from `openssl x509 -in FILE -out ca.pem`",
            )
        stem = PurePath(certificate).stem
        if stem in stems:
            yield SettingsError(
                key,
                f"{certificate} has the same file name as flower_egress_ca_certificates"
                f"[{stems[stem]}]: both would be {stem}.crt on the hosts, one overwriting the "
                "other",
                "rename one of the two files",
            )
        stems.setdefault(stem, i)


PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def ca_certificate_problem(content: bytes) -> str | None:
    """Why `content` is not one PEM certificate, or None. Never quotes the content."""
    labels = [label.decode() for label in PEM_BLOCK.findall(content)]
    if any("PRIVATE KEY" in label for label in labels):
        return (
            "holds a PRIVATE KEY, which would be uploaded world-readable (0644) to every host: "
            "only the certificate may be"
        )
    if labels != ["CERTIFICATE"]:
        found = ", ".join(labels) or "none"
        return f"is not one PEM CERTIFICATE block (PEM blocks found: {found})"
    try:
        x509.load_pem_x509_certificate(content)
    except ValueError:
        return "holds a CERTIFICATE block that does not parse as an X.509 certificate"
    return None
