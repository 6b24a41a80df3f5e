"""Flower's proxy login without the lab: the host-side maker, the unit, nginx's include."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys

from settings_helpers import OAUTH, settings_with

from flowerbed.flower import unit_text
from flowerbed.inputs.edge import dashboard_site
from flowerbed.nginx import https_site_text
from flowerbed.proxy_login import CHECK, MAKE, USER, env_files


def make(tmp_path, runs: int = 1) -> tuple[str, str]:
    env, include = tmp_path / "login.env", tmp_path / "login.nginx.conf"
    for _ in range(runs):
        subprocess.run([sys.executable, "-IS", "-c", MAKE, str(env), str(include), USER],
                       check=True, capture_output=True)  # fmt: skip
    for path in (env, include):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert not list(tmp_path.glob(".proxy-login-*")), "no temporary file is left"
    return env.read_text(), include.read_text()


def test_both_files_hold_one_random_login_nginx_sends_as_flower_expects(tmp_path):
    env, include = make(tmp_path)
    key, _, login = env.strip().partition("=")
    assert key == "FLOWER_BASIC_AUTH" and login.startswith(f"{USER}:")
    password = login.split(":", 1)[1]
    assert len(password) >= 40 and "," not in password  # Flower splits basic_auth on commas
    token = base64.b64encode(login.encode()).decode()
    assert include == f'proxy_set_header Authorization "Basic {token}";\n'


def test_each_making_is_a_new_password(tmp_path):
    first = make(tmp_path)
    assert make(tmp_path) != first


def test_the_unit_reads_the_login_only_with_logins_at_nginx():
    basic, oauth = settings_with(), settings_with(**OAUTH)
    flower = basic.flower
    assert f"EnvironmentFile={flower.proxy_login_env}\n" in unit_text(flower, [], "basic")
    assert "proxy-login" not in unit_text(oauth.flower, [], "oauth")
    assert env_files(flower, "oauth") == [flower.env_file]
    assert "FLOWER_UNAUTHENTICATED_API=false" in unit_text(flower, [], "basic")


def test_nginx_sends_the_login_from_its_root_only_include_never_the_users():
    settings = settings_with(flower_fqdn="h1.example.com")
    site = https_site_text(dashboard_site(settings, "h1"), settings.dashboard_proxy)
    assert f"include {settings.flower.proxy_login_nginx};" in site
    assert 'proxy_set_header Authorization "";' in site, "the failure counter gets no login"


def check(tmp_path) -> str:
    paths = [str(tmp_path / "login.env"), str(tmp_path / "login.nginx.conf")]
    run = subprocess.run([sys.executable, "-IS", "-c", CHECK, *paths],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return run.stdout.strip()


def test_the_check_says_ok_missing_or_bad_and_never_the_login(tmp_path):
    assert check(tmp_path) == "missing"
    env, include = make(tmp_path)
    assert check(tmp_path) == ("ok" if os.geteuid() == 0 else "bad")
    (tmp_path / "login.nginx.conf").write_text(include.replace("Basic ", "Basic x"))
    assert check(tmp_path) == "bad", "two different logins"
    make(tmp_path)
    os.chmod(tmp_path / "login.env", 0o644)
    assert check(tmp_path) == "bad", "readable by others"
    assert env.split(":")[-1].strip() not in check(tmp_path)
