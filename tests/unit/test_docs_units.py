"""docs/configuration.md is what docs/gen_config_reference.py writes from the settings model and
group_data/all.py: a key added to the model, a changed default or comment makes it stale."""

from __future__ import annotations

import re
import runpy
from dataclasses import dataclass
from pathlib import Path

from flowerbed.resources import DEFAULTS
from flowerbed.settings import known_keys
from flowerbed.settings.checks import boolean, integer, one_of, setting

REPO = Path(__file__).resolve().parents[2]
GENERATOR = runpy.run_path(str(REPO / "docs" / "gen_config_reference.py"))
REFERENCE = REPO / "docs" / "configuration.md"


def documented_keys(text: str) -> list[str]:
    return re.findall(r"^### `([a-z0-9_]+)`$", text, flags=re.M)


def test_the_configuration_reference_is_current():
    assert REFERENCE.read_text() == GENERATOR["render"](), (
        "docs/configuration.md is stale: run `make docs` and commit it"
    )


def test_every_key_of_the_settings_model_is_documented_once():
    keys = documented_keys(REFERENCE.read_text())
    assert sorted(keys) == sorted(known_keys())
    assert len(keys) == len(set(keys))


def test_every_default_is_a_documented_key():
    assert set(DEFAULTS) <= set(documented_keys(REFERENCE.read_text()))


def test_a_key_added_to_the_model_is_picked_up_with_its_check():
    @dataclass(frozen=True)
    class Example:
        """A section the model does not have (yet)."""

        nginx_site: str = setting(one_of(("own", "beside"), optional=False), "where the site goes")
        nginx_site_include: bool = setting(boolean())
        nginx_site_weight: int = setting(integer(minimum=2, maximum=9))

        prefix = "flower_"

    all_py = (
        "# --- Placing Flower ---\n"
        "flower_nginx_site = 'own'  # which nginx site serves the dashboard\n"
    )
    text = GENERATOR["render"]({"example": Example}, all_py)
    assert documented_keys(text) == [
        "flower_nginx_site", "flower_nginx_site_include", "flower_nginx_site_weight"
    ]  # fmt: skip
    assert "## Placing Flower" in text and "## Keys without a default" in text
    assert "one of `'own'`, `'beside'`" in text
    assert "which nginx site serves the dashboard; where the site goes." in text
    assert "an integer from 2 to 9" in text and "True or False" in text
    assert "(none: required)" in text  # not in DEFAULTS


def test_allowed_values_come_from_the_checks():
    text = REFERENCE.read_text()
    section = text.split("### `flower_tls_challenge`")[1].split("###")[0]
    assert "one of `'http-01'`, `'dns-01'`" in section
    section = text.split("### `flower_firewall_rollback_seconds`")[1].split("###")[0]
    assert "an integer from 45 to 600" in section
