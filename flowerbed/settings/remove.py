"""The removal run's knobs (flower_remove_*): what remove.py (flowerbed/remove.py) keeps."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import boolean, setting


@dataclass(frozen=True)
class Remove:
    """What taking flowerbed off a host keeps; defaults in group_data/all.py."""

    packages: bool = setting(
        boolean(), "purge the apt packages flowerbed installed (recorded since it did)"
    )
    revoke_certificate: bool = setting(boolean(), "revoke the certificate before deleting it")
    keep_state: bool = setting(
        boolean(), "Flower's state goes to a dated root-only backup first (False: deleted)"
    )

    prefix = "flower_remove_"
