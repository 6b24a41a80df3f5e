"""What flowerbed ships inside its package, and where the operator's own files are found.

Package data, found with importlib.resources (in this repository and in an installed wheel
alike): templates/ (every file written to hosts), files/ (the host scripts), locks/ (Flower's
hash-pinned requirements) and flowerbed.defaults (every data key's default). In the repository
these are symlinks in flowerbed/ to the top-level templates/, files/, locks/ and
group_data/all.py: one copy of each file, copied into the wheel when it is built.

The operator's files named in data (flower_egress_ca_certificates, flower_app_source,
flower_tls_acme_ca_bundle, flower_tls_dns_hook) are absolute, or relative to ONE base: the
directory pyinfra runs in (its working directory, pyinfra's `state.cwd`).
"""

from __future__ import annotations

import os
from importlib import import_module
from importlib.resources import files
from pathlib import Path
from typing import Any


def package_path(*parts: str) -> Path:
    """A file or directory shipped in the package. pip installs wheels unpacked, so it is a
    real path (which pyinfra's uploads and jinja's loader need)."""
    return Path(str(files("flowerbed").joinpath(*parts)))


TEMPLATES = package_path("templates")
HOST_SCRIPTS = package_path("files")
LOCKS = package_path("locks")


def _defaults() -> dict[str, Any]:
    module = import_module("flowerbed.defaults")
    return {key: value for key, value in vars(module).items() if key.startswith("flower_")}


# Every data key's default (flowerbed/defaults.py, which is group_data/all.py).
DEFAULTS: dict[str, Any] = _defaults()


def local_base() -> Path:
    """The base of relative paths in data: the directory pyinfra runs in."""
    return Path(os.getcwd())


def local_path(value: str) -> Path:
    """A path on the operator's machine, from data: absolute, or relative to local_base()."""
    return (local_base() / value).resolve()


def is_local_file(value: str) -> bool:
    """A file here; False, never an OSError, for a name the file system refuses (too long)."""
    try:
        return local_path(value).is_file()
    except OSError:
        return False


def is_local_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
