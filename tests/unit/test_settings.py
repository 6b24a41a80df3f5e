"""Settings validation, secrets and rendering: no lab needed."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from settings_helpers import OAUTH, defaults, error_for, settings_with, valid_data

from flowerbed.flower import config_text, env_text, exec_start, required_packages, unit_text
from flowerbed.inputs.secrets import Secret, load_flower_secrets
from flowerbed.packages import pip_conf
from flowerbed.preflight import InvalidDeploy, check_host
from flowerbed.render import systemd_quote
from flowerbed.settings import OWNED_PREFIXES, SettingsError, known_keys, load_settings
from flowerbed.settings.verify import VERIFY, Verify
from flowerbed.venv import AppPackage, source_archive, venv_key

REPO = Path(__file__).resolve().parents[2]
BROKER = "redis://:s3cret-pw@10.0.0.5:6379/0"
ENVIRON = {"FLOWERBED_BROKER_URL": BROKER}
COOKIE_SECRET = "k9Xv2PqL7sWm4TzR8yNc3BfH6dJg1QaE"  # 32 random characters


# --- the data model -------------------------------------------------------------------------


def test_defaults_are_valid_and_complete():
    settings = load_settings(valid_data())
    assert settings.flower.version == "2.2.0"
    assert set(known_keys()) <= set(defaults()), "group_data/all.py defines every key"
    owned = {key for key in defaults() if key.startswith(OWNED_PREFIXES)}
    operator = {key for key in owned if key.startswith(VERIFY)}  # verify.py's and rotate.py's
    assert owned - operator <= set(known_keys()), "every key in group_data/all.py is validated"
    assert {key.removeprefix(VERIFY) for key in operator} == {f.name for f in fields(Verify)}


def test_every_default_has_a_comment():
    lines = (REPO / "group_data" / "all.py").read_text().splitlines()
    for key in known_keys():
        line = next(line for line in lines if line.startswith(f"{key} = "))
        assert "  # " in line, f"{key} has no comment in group_data/all.py"


def test_misspelt_key_names_the_key_and_the_fix():
    message = error_for(flower_max_task=5000)
    assert message.startswith("flower_max_task: unknown key")
    assert "did you mean 'flower_max_tasks'" in message


def test_misspelt_key_outside_the_prefix_is_caught():
    assert "did you mean 'flower_persistent'" in error_for(flowr_persistent=True)


def test_unknown_flower_option_is_an_error():
    assert error_for(flower_cors_enabled=True).startswith("flower_cors_enabled: not a setting")
    assert "unknown key" in error_for(flower_frobnicate=1)


def test_listening_options_are_refused():
    assert "unix socket" in error_for(flower_port=5555)
    assert "unix socket" in error_for(flower_address="0.0.0.0")


def test_secret_values_are_refused_in_data():
    assert "flower_broker_url_env" in error_for(flower_broker_url="redis://:pw@x/0")


def test_other_tools_keys_are_left_alone():
    own = {"ssh_user": "root", "nginx_user": "www-data", "tls_cert": "/x.pem", "lab_thing": 1}
    assert settings_with(**own)
    # an old name of flowerbed's is the deploy's own key once the new name is set explicitly
    assert settings_with(fqdn="app.example", flower_fqdn="flower.example").site.fqdn == (
        "flower.example"
    )


def test_a_key_left_out_takes_its_shipped_default():
    data = valid_data()
    del data["flower_max_workers"]
    assert load_settings(data).options.max_workers == defaults()["flower_max_workers"] == 5000


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("flower_max_tasks", "lots", "expected an integer"),
        ("flower_max_tasks", True, "expected an integer"),
        ("flower_max_tasks", 0, "below 1"),
        ("flower_persistent", "yes", "expected True or False"),
        ("flower_purge_offline_workers", -5, "below 1"),
        ("flower_tasks_columns", "name,uuid,colour", "unknown columns ['colour']"),
        ("flower_url_prefix", "a b", "is not a URL path"),
        ("flower_user", "Flower User", "system user/group name"),
        ("flower_config_dir", "etc/flower", "not an absolute path"),
        ("flower_config_dir", "/etc/my flower", "not an absolute path"),
        ("flower_broker_url_env", "redis://:pw@host/0", "the NAME of an environment variable"),
        ("flower_auth_provider", "my.Handler", "not supported"),
        ("flower_app", "proj app", "Celery app"),
        ("flower_egress_proxy", "socks5://proxy:1080", "not a http/https URL"),
        ("flower_egress_proxy", "http://user:pw@proxy:3128", "carries credentials"),
        ("flower_basic_auth", {"al:ice": "PW"}, "not letters, digits"),
        ("flower_basic_auth", ["alice"], "a dict"),
        ("flower_egress_ca_certificates", ["no/such/ca.pem"], "is not a file"),
    ],
)
def test_bad_values_name_key_and_problem(key, value, problem):
    message = error_for(**{key: value})
    assert message.startswith(f"{key}") and problem in message and "Fix:" in message


def test_db_suffix_pitfall():
    message = error_for(flower_db="flower.db")
    assert "flower.db.db" in message and "flower_db = 'flower'" in message


def test_version_without_a_lock():
    message = error_for(flower_version="9.9.9")
    assert "no lock file locks/flower-9.9.9.txt" in message and "2.2.0" in message


def test_every_lock_is_fully_hash_pinned():
    locks = list((REPO / "locks").glob("flower-*.txt"))
    assert locks, "no lock files"
    for lock in locks:
        # one requirement per entry: "name==version [; marker] \ --hash=sha256:<64 hex> ..."
        entries = re.split(r"\n(?=[A-Za-z])", lock.read_text().split("\n", 2)[2])
        assert any(entry.startswith("packaging==") for entry in entries), lock
        for entry in entries:
            assert re.match(r"[A-Za-z0-9._-]+==[^ ;\\]+", entry), f"{lock.name}: {entry}"
            hashes = re.findall(r"--hash=sha256:([0-9a-f]*)", entry)
            assert hashes and all(len(h) == 64 for h in hashes), f"{lock.name}: {entry}"


def test_app_and_source_go_together():
    assert "go together" in error_for(flower_app="proj.celery:app")
    assert "go together" in error_for(flower_app_source="proj==1.0")
    assert "not a directory" in error_for(flower_app="a:app", flower_app_source="./no/such/dir")


def test_state_saving_needs_persistence():
    assert "flower_persistent" in error_for(flower_persistent=False, flower_state_save_interval=5)


def test_oauth_needs_its_settings_and_secrets():
    assert settings_with(**OAUTH)
    assert "flower_auth_provider" in error_for(**{**OAUTH, "flower_auth_provider": ""})
    assert "flower_cookie_secret_env" in error_for(**{**OAUTH, "flower_cookie_secret_env": ""})
    message = error_for(**{**OAUTH, "flower_healthcheck_min_workers": 1})
    assert "flower_healthcheck_min_workers = 0" in message


# --- secrets --------------------------------------------------------------------------------


def test_secrets_come_from_the_named_variables():
    settings = settings_with(**OAUTH, flower_basic_auth={"alice": "PW_ALICE", "bob": "PW_BOB"})
    environ = {
        **ENVIRON,
        "PW_ALICE": "alice-pw-4711-x",
        "PW_BOB": "bob-pw-0815-yz",
        "OAUTH_SECRET": "oauth-client-secret-1",
        "COOKIE_SECRET": COOKIE_SECRET,
    }
    secrets = load_flower_secrets(settings.flower, environ)
    assert secrets.broker_url.value == BROKER
    assert secrets.basic_auth.value == "alice:alice-pw-4711-x,bob:bob-pw-0815-yz"
    assert secrets.oauth2_secret.value == "oauth-client-secret-1"
    assert secrets.cookie_secret.value == COOKIE_SECRET
    assert secrets.broker_api is None


def test_missing_secret_names_the_variable():
    with pytest.raises(SettingsError, match="FLOWERBED_BROKER_URL it names is unset"):
        load_flower_secrets(settings_with().flower, {})


def test_comma_in_basic_auth_password_is_refused():
    settings = settings_with(**OAUTH, flower_basic_auth={"alice": "PW_ALICE"})
    with pytest.raises(SettingsError) as caught:
        load_flower_secrets(
            settings.flower, {**ENVIRON, "PW_ALICE": "pass,word", "OAUTH_SECRET": "o"}
        )
    message = str(caught.value)
    assert "flower_basic_auth['alice']" in message and "','" in message
    assert "pass,word" not in message


def test_broker_url_must_be_a_supported_broker():
    with pytest.raises(SettingsError, match="scheme 'http'"):
        load_flower_secrets(settings_with().flower, {"FLOWERBED_BROKER_URL": "http://x/"})


def test_secret_never_prints_its_value():
    secret = Secret("$FLOWERBED_BROKER_URL", BROKER)
    assert "s3cret" not in f"{secret} {secret!r} {[secret]}"


def test_bad_host_fails_preflight_with_the_host_name():
    data = {**valid_data(), "flower_max_tasks": "many"}
    host = SimpleNamespace(name="h7", data=SimpleNamespace(dict=lambda: data))
    with pytest.raises(InvalidDeploy, match="(?m)^host h7: flower_max_tasks: expected an integer"):
        check_host(host)


# --- rendered files -------------------------------------------------------------------------


def test_unit_has_no_secret_and_celery_options_before_flower():
    settings = settings_with(flower_app="proj.celery:app", flower_app_source="proj==1.0")
    argv = exec_start(settings.flower)
    assert argv.index("--app=proj.celery:app") < argv.index("flower")
    assert not any("broker" in arg for arg in argv)
    unit = unit_text(settings.flower)
    assert "EnvironmentFile=/etc/flower/flower.env" in unit
    assert "s3cret" not in unit and "CELERY_BROKER_URL" not in unit
    for line in ("NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n"):
        assert line in unit


def test_config_file_holds_flower_typed_options():
    settings = settings_with(flower_max_tasks=5000, flower_tasks_columns="name, state")
    values: dict = {}
    exec(config_text(settings.flower, settings.options), {}, values)  # Flower reads it the same way
    assert values["max_tasks"] == 5000
    assert values["unix_socket"] == "/run/flower/flower.sock"
    assert values["db"] == "/var/lib/flower/flower"
    assert isinstance(values["inspect_timeout"], float)
    assert values["tasks_columns"] == "name,state"
    assert "purge_offline_workers" not in values and "port" not in values


def test_env_file_quotes_values_for_systemd():
    environ = {"FLOWERBED_BROKER_URL": 'redis://:p"a$s\\w`d@h/0'}
    settings = settings_with()
    env = env_text(settings.flower, load_flower_secrets(settings.flower, environ))
    assert isinstance(env, Secret)
    assert 'CELERY_BROKER_URL="redis://:p\\"a\\$s\\\\w\\`d@h/0"' in env.value
    assert systemd_quote("plain") == '"plain"'
    with pytest.raises(ValueError):
        systemd_quote("two\nlines")


# --- venvs ----------------------------------------------------------------------------------


def test_app_archive_is_reproducible(tmp_path):
    """Same files, other times and owners (another checkout, another machine): same bytes."""
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(REPO / "lab" / "demo_app", first)
    shutil.copytree(REPO / "lab" / "demo_app", second)
    for path in second.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
        os.chown(path, 4711, 4711)
    assert source_archive(first) == source_archive(second)
    next(p for p in sorted(second.rglob("*.py"))).write_text("# changed\n")
    assert source_archive(first) != source_archive(second), "content still counts"


def test_venv_key_follows_lock_and_app():
    lock = b"flower==2.2.0 --hash=sha256:x\n"
    base = venv_key(lock, None)
    assert base == venv_key(lock, None)
    assert base != venv_key(lock + b"#", None)
    assert base != venv_key(lock, AppPackage("proj==1.0"))


def test_pip_reaches_its_index_through_the_egress_proxy():
    settings = settings_with(
        flower_egress_proxy="http://10.77.0.1:3128",
        flower_pip_index_url="https://pypi.internal/simple/",
    )
    conf = pip_conf(settings.egress)
    assert "proxy = http://10.77.0.1:3128" in conf
    assert "index-url = https://pypi.internal/simple/" in conf
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in conf
    assert "proxy" not in pip_conf(settings_with().egress).split("[global]")[1]


@pytest.mark.parametrize(
    ("source", "local", "git"),
    [
        ("lab/demo_app", True, False),
        ("git+https://git.example.com/proj.git@v1.2", False, True),
        ("proj==1.2.0", False, False),
    ],
)
def test_app_source_kinds(source, local, git):
    flower = settings_with(flower_app="proj:app", flower_app_source=source).flower
    assert (flower.app_is_local, flower.app_is_git) == (local, git)
    assert ("git" in required_packages(flower)) == git
