"""The egress proxy's URL: an allow-list of URL characters, and apt's own parser reads back
exactly the two settings flowerbed means (apt-config dump)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from settings_helpers import error_for, settings_with

from flowerbed.render import render

INJECTED = 'http://proxy.internal:3128/"; APT::Update::Pre-Invoke {"touch /tmp/pwned";}; //'


@pytest.mark.parametrize(
    "proxy",
    [INJECTED, "http://proxy.internal:3128/ x", "http://proxy.internal:3128/{x}",
     "http://proxy.internal:3128/\\", "http://proxy.internal:3128/`id`"],
)  # fmt: skip
def test_a_proxy_url_with_characters_no_url_holds_is_refused_unshown(proxy):
    message = error_for(flower_egress_proxy=proxy)
    assert message.startswith("flower_egress_proxy: has characters no URL holds")
    assert "pwned" not in message and "Fix: percent-encode" in message


def apt_dump(tmp_path, text: str) -> dict[str, str]:
    """Every setting apt reads with `text` as its only configuration (APT_CONFIG, no parts)."""
    if not shutil.which("apt-config"):
        pytest.fail("apt-config (Debian's apt) is needed: this suite runs on Debian")
    conf, parts, main = tmp_path / "apt.conf", tmp_path / "parts", tmp_path / "main.conf"
    conf.write_text(text)
    parts.mkdir(exist_ok=True)
    main.write_text(f'Dir::Etc::parts "{parts}";\n#include "{conf}";\n')
    dumped = subprocess.run(
        ["apt-config", "dump"], env={**os.environ, "APT_CONFIG": str(main)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.partition(" ")[::2] for line in dumped.splitlines())


def set_by(tmp_path, proxy: str) -> dict[str, str]:
    """The settings flowerbed's file adds to apt's own defaults."""
    defaults = apt_dump(tmp_path, "")
    with_file = apt_dump(tmp_path, render("apt-proxy.conf.j2", proxy=proxy))
    return {
        k: v for k, v in with_file.items() if defaults.get(k) != v and v != '"";'
    }  # not tree nodes


@pytest.mark.parametrize(
    "proxy",
    ["http://proxy.internal:3128", "http://10.0.0.1:3128/", "https://[2001:db8::1]:8443/p;x=1",
     "http://proxy.example.com:3128/a'b(c)*+,=!$&~"],
)  # fmt: skip
def test_apt_reads_back_exactly_the_proxy_and_nothing_else(tmp_path, proxy):
    settings = settings_with(flower_egress_proxy=proxy)
    quoted = f'"{proxy}";'
    assert set_by(tmp_path, settings.egress.egress_proxy) == {
        "Acquire::http::Proxy": quoted,
        "Acquire::https::Proxy": quoted,
    }


def test_the_parser_proof_sees_what_the_allow_list_keeps_out(tmp_path):
    """Rendered unchecked, the injected value would give apt a command to run as root."""
    assert any(key.startswith("APT::Update::Pre-Invoke") for key in set_by(tmp_path, INJECTED))
