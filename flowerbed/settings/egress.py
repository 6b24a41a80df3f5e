"""How hosts reach package registries: an HTTP(S) proxy, extra CAs, a PyPI mirror."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..resources import local_path
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
    """Every extra CA is a file here: the deploy uploads it to the hosts."""
    for i, certificate in enumerate(s.egress.egress_ca_certificates):
        if not local_path(certificate).is_file():
            yield SettingsError(
                f"flower_egress_ca_certificates[{i}]",
                f"{certificate} is not a file",
                "give the path of a PEM file, absolute or relative to where pyinfra runs",
            )
