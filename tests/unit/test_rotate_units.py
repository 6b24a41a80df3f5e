"""rotate.py's planning and env-file writes, and the flower_verify_* knobs: no lab needed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import settings_helpers
from dotenv import dotenv_values

from flowerbed.env_file import env_file_holding, update_env_file
from flowerbed.rotate import NEW_LOGINS_VARIABLE, new_logins
from flowerbed.settings import SettingsError, operator_checks

USERS = "FLOWERBED_DASHBOARD_USERS"


def env_file(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_env_file_update_is_atomic_0600_and_keeps_everything_else(tmp_path: Path):
    text = f"# my secrets\nFLOWERBED_BROKER_URL=redis://:a@b/0\n{USERS}=admin:old\n"
    path = env_file(tmp_path, text)
    inode = path.stat().st_ino
    update_env_file(path, {USERS: "admin:new pass#1", f"{USERS}_PREVIOUS": "admin:old"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != inode, "written to a new file, then renamed over the old one"
    assert path.read_text().startswith("# my secrets\n")
    values = dotenv_values(path)
    assert values[USERS] == "admin:new pass#1" and values[f"{USERS}_PREVIOUS"] == "admin:old"
    assert values["FLOWERBED_BROKER_URL"] == "redis://:a@b/0"
    update_env_file(path, {f"{USERS}_PREVIOUS": None})
    assert f"{USERS}_PREVIOUS" not in dotenv_values(path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".env", ".env.lock"], "no staging copy is left behind; the lock stays"
    assert stat.S_IMODE((tmp_path / ".env.lock").stat().st_mode) == 0o600


def test_simple_values_stay_unquoted_for_line_readers(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:old\n")
    update_env_file(path, {USERS: "admin:Abc-123_xyz"})
    assert f"{USERS}=admin:Abc-123_xyz\n" in path.read_text()


def test_generated_passwords_are_strong_and_only_for_the_chosen_users():
    value, users = new_logins("alice:a-old,bob:b-old", ["bob"], "", USERS)
    logins = dict(entry.split(":", 1) for entry in value.split(","))
    assert users == ("bob",)
    assert logins["alice"] == "a-old"
    assert len(logins["bob"]) >= 32 and "," not in logins["bob"]
    again, _ = new_logins("alice:a-old,bob:b-old", [], "", USERS)
    assert len({*dict(e.split(":", 1) for e in again.split(",")).values(), "a-old"}) == 3


def test_a_given_password_is_used():
    value, users = new_logins("alice:a-old", [], "alice:Given-1", USERS)
    assert value == "alice:Given-1" and users == ("alice",)


@pytest.mark.parametrize(
    "chosen, given, key",
    [
        (["carol"], "", "rotate_users"),
        ("alice", "", "rotate_users"),
        (["alice"], "bob:x-new", NEW_LOGINS_VARIABLE),
        ([], "alice:a-old", NEW_LOGINS_VARIABLE),
        ([], "alice:has,comma", NEW_LOGINS_VARIABLE),
    ],
)
def test_bad_rotation_input_names_the_key_and_never_the_password(chosen, given, key):
    with pytest.raises(SettingsError) as error:
        new_logins("alice:a-old,bob:b-old", chosen, given, USERS)
    assert error.value.key.startswith(key) or key in str(error.value)
    assert "a-old" not in str(error.value) and "x-new" not in str(error.value)


def test_the_source_file_must_hold_the_variable_and_the_shell_must_not(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:pw\n")
    assert env_file_holding(USERS, {"FLOWERBED_ENV_FILE": str(path)}) == path
    with pytest.raises(SettingsError, match="set in the environment"):
        env_file_holding(USERS, {"FLOWERBED_ENV_FILE": str(path), USERS: "admin:pw"})
    with pytest.raises(SettingsError, match="not set in"):
        env_file_holding("FLOWERBED_OTHER", {"FLOWERBED_ENV_FILE": str(path)})
    with pytest.raises(SettingsError, match="does not exist"):
        env_file_holding(USERS, {"FLOWERBED_ENV_FILE": str(tmp_path / "missing")})
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert env_file_holding(USERS, {}) == Path(tmp_path / ".env")
    finally:
        os.chdir(cwd)


def defaults() -> dict:
    return {k: v for k, v in settings_helpers.defaults().items() if k.startswith("flower_verify_")}


def test_verify_thresholds_have_documented_defaults():
    checks = operator_checks(defaults())
    assert checks.cert_min_days == 14 and checks.exposure_max == 1.5
    assert checks.expected_tasks == () and checks.ca_bundle == ""


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("flower_verify_max_failed_tasks", -1, "is not a number of tasks"),
        ("flower_verify_cert_min_days", "14", "is not a number of days"),
        ("flower_verify_expected_tasks", "proj.add", "is not a list"),
        ("flower_verify_ca_bundle", "/nonexistent.pem", "does not exist"),
        ("flower_verify_max_failed_taks", 5, "unknown key"),
    ],
)
def test_bad_verify_knobs_name_the_key(key, value, problem):
    with pytest.raises(SettingsError) as error:
        operator_checks({**defaults(), key: value})
    assert error.value.key == key and problem in str(error.value)
