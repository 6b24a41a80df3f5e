"""The rollout's knobs (flower_rollout_*): how `python -m flowerbed.rollout` splits the
inventory into batches (flowerbed/rollout.py). The deploy validates them with every other key;
the rollout reads them with `rollout_knobs(data)` before any host changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..resources import DEFAULTS
from .checks import integer, section_from, setting, text


@dataclass(frozen=True)
class Rollout:
    """The batches a change rolls out in; defaults in group_data/all.py."""

    batch: int = setting(
        integer(minimum=1, maximum=10000),
        "each batch's health check gates the next",
    )
    canary: str = setting(
        text(r"|[A-Za-z0-9_.:@-]{1,253}", "an inventory host name, or '' for the first host"),
        "a failure there stops the rollout before any other host changes",
    )

    prefix = "flower_rollout_"


def rollout_knobs(data: Mapping[str, Any]) -> Rollout:
    """One host's flower_rollout_* knobs over their defaults, validated (a misspelt one too)."""
    return section_from(Rollout, {**DEFAULTS, **data})
