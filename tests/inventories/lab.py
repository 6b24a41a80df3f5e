"""inventory/lab.py, plus data for single hosts: for tests that change one host only.

    FLOWERBED_TEST_HOST_DATA='{"NAME": {"key": value}}'   (JSON)
    FLOWERBED_TEST_UNREACHABLE='{"NAME": "ADDRESS"}'     (more hosts, where nothing answers)
    FLOWERBED_TEST_ONLY_HOSTS='["NAME", ...]'           (only these hosts: an operator's
                                                         inventory of one fleet, for rotate.py)

Named lab.py so its hosts join the `lab` group, like inventory/lab.py's (the repository has
no group_data/lab.py: the lab's data is set per host in inventory/lab.py).
"""

import json
import os
import runpy
from pathlib import Path

_lab = runpy.run_path(str(Path(__file__).resolve().parents[2] / "inventory" / "lab.py"))
_host_data = json.loads(os.environ.get("FLOWERBED_TEST_HOST_DATA", "{}"))


def _with_host_data(hosts: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(name, {**data, **_host_data.get(name, {})}) for name, data in hosts]


_unreachable = json.loads(os.environ.get("FLOWERBED_TEST_UNREACHABLE", "{}"))
_ghosts = [
    _lab["_lab_host"]({"name": name, "address": address, "fqdn": f"{name}.flowerbed.test"})
    for name, address in _unreachable.items()
]

_only = json.loads(os.environ.get("FLOWERBED_TEST_ONLY_HOSTS", "null"))


def _kept(hosts: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [host for host in hosts if _only is None or host[0] in _only]


bookworm = _kept(_with_host_data(_lab["bookworm"]) + _ghosts)
trixie = _kept(_with_host_data(_lab["trixie"]))
