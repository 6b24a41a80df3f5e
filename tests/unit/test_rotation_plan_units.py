"""rotate.py's plan without a lab: which hosts are targets (whatever --limit says), what the
report says of the hosts a run did not reach, the env file's lock and compare-and-swap write,
and the OAuth cookie secret rotation kind."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values
from settings_helpers import OAUTH, settings_with, valid_data

from flowerbed.env_file import (
    EnvFileBusy,
    hold_env_file,
    lock_file,
    release_env_file,
    update_env_file,
)
from flowerbed.rotate import (
    NEW_COOKIE_VARIABLE,
    Rotation,
    plan_rotation,
    report_lines,
    rotation_targets,
    variable_used,
)
from flowerbed.settings import SettingsError

USERS, BROKER, COOKIE = "FLOWERBED_DASHBOARD_USERS", "FLOWERBED_BROKER_URL", "COOKIE_SECRET"
OLD_COOKIE = "k9Xv2PqL7sWm4TzR8yNc3BfH6dJg1QaE-old"


def fleet(**hosts: dict) -> dict[str, dict]:
    """name -> data, every key at its default but those given (as host.data.dict() is)."""
    return {name: valid_data(**data) for name, data in hosts.items()}


FLEET = fleet(h1={}, h2={}, h3={})


# --- targets and --limit --------------------------------------------------------------------


def test_every_host_that_uses_the_variable_is_a_target_whatever_the_limit():
    targets, outside = rotation_targets("logins", USERS, FLEET, in_run=["h1"])
    assert targets == ("h1", "h2", "h3")
    assert outside == ("h2", "h3")
    assert rotation_targets("logins", USERS, FLEET, ["h1", "h2", "h3"]) == (targets, ())


def test_hosts_with_another_variable_or_mode_are_not_targets():
    hosts = fleet(
        h1={},
        other={"flower_auth_users_env": "TEAM_B_USERS"},
        oauth={**OAUTH},
        rabbit={"flower_broker_url_env": "RABBIT_URL"},
    )
    assert rotation_targets("logins", USERS, hosts, ["h1"]) == (("h1", "rabbit"), ("rabbit",))
    assert rotation_targets("broker", BROKER, hosts, ["h1"])[0] == ("h1", "other", "oauth")
    assert rotation_targets("cookie", COOKIE, hosts, ["oauth"]) == (("oauth",), ())
    assert variable_used("logins", hosts["oauth"]) == "", "OAuth hosts have no nginx logins"


def test_a_host_in_the_run_that_uses_another_variable_is_refused():
    hosts = fleet(h1={}, h2={"flower_auth_users_env": "TEAM_B_USERS"})
    with pytest.raises(SettingsError, match=r"hosts h2 in this run do not use \$FLOWERBED_DASH"):
        rotation_targets("logins", USERS, hosts, ["h1", "h2"])


def rotation(**overrides) -> Rotation:
    values = dict(
        kind="logins", env_file=Path(".env"), variable=USERS, old="admin:old-pass-123",
        new="admin:new-pass-456", users=("admin",), resumed=False,
        targets=("h1", "h2", "h3"), outside=("h2", "h3"),
    )  # fmt: skip
    return Rotation(**{**values, **overrides})


CONFIRMED = (True, {"admin": "new"})


def test_the_report_names_hosts_outside_the_limit_as_not_rotated_and_keeps_the_old_value():
    lines, done = report_lines(rotation(), {"h1": CONFIRMED})
    assert not done, "the old value stays while any host that uses it was not rotated"
    assert lines[0] == (
        "    h1: confirmed (admin: accepts the new password and refuses the old one)"
    )
    for line, name in zip(lines[1:], ("h2", "h3"), strict=True):
        assert line.startswith(f"    {name}: NOT rotated (outside --limit")
        assert f"${USERS}_PREVIOUS" in line
    assert "new-pass" not in "".join(lines) and "old-pass" not in "".join(lines)


def test_only_every_target_confirmed_finishes():
    every = {name: CONFIRMED for name in ("h1", "h2", "h3")}
    assert report_lines(rotation(outside=()), every)[1]
    assert not report_lines(rotation(outside=()), {"h1": CONFIRMED, "h2": CONFIRMED})[1]
    assert not report_lines(rotation(), every)[1], "outside --limit never confirms in this run"
    broker = rotation(kind="broker", variable=BROKER, users=(), outside=())
    lines, done = report_lines(broker, {"h1": (True, {}), "h2": (False, {"problem": "x"})})
    assert lines == [
        "    h1: confirmed (healthy on the new broker URL)",
        "    h2: NOT confirmed (x)",
        "    h3: NOT confirmed (not reached)",
    ]
    assert not done


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ops.env"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_limited_plan_keeps_every_target_and_names_those_outside(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:Old-password-1\n")
    plan = plan_rotation(
        settings_with(), {}, {"FLOWERBED_ENV_FILE": str(path)}, FLEET, in_run=["h2"]
    )
    assert plan.targets == ("h1", "h2", "h3") and plan.outside == ("h1", "h3")
    assert plan.old == "admin:Old-password-1" and plan.new != plan.old


# --- the env file: lock and atomic, compare-and-swap write ----------------------------------


def test_the_write_waits_for_the_lock_and_gives_up_with_a_clear_error(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:old\n")
    fd = os.open(lock_file(path), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process's lock, as far as flock goes
    try:
        started = time.monotonic()
        with pytest.raises(EnvFileBusy, match="locked by another process"):
            update_env_file(path, {USERS: "admin:new"}, wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert dotenv_values(path)[USERS] == "admin:old", "nothing written without the lock"
    finally:
        os.close(fd)
    update_env_file(path, {USERS: "admin:new"}, wait=0.3)
    assert dotenv_values(path)[USERS] == "admin:new"


def test_a_second_rotate_on_the_same_file_is_refused_while_the_first_holds_it(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:old\n")
    hold_env_file(path)
    try:
        update_env_file(path, {USERS: "admin:mine"})  # the holder itself still writes
        other = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(f"""
                from pathlib import Path
                from flowerbed.env_file import hold_env_file, EnvFileBusy
                try:
                    hold_env_file(Path({str(path)!r}))
                except EnvFileBusy as error:
                    print("refused:", error)
            """)],
            capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert other.stdout.startswith("refused:") and "another rotate.py" in other.stdout, (
            other.stdout + other.stderr
        )
    finally:
        release_env_file(path)
    assert dotenv_values(path)[USERS] == "admin:mine"


def test_the_write_refuses_a_file_changed_since_the_plan(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:changed-by-someone\n")
    before = path.read_text()
    with pytest.raises(EnvFileBusy, match="changed in .* since this run read it"):
        update_env_file(
            path,
            {USERS: "admin:new", f"{USERS}_PREVIOUS": "admin:old"},
            expect={USERS: "admin:old", f"{USERS}_PREVIOUS": None},
        )
    assert path.read_text() == before
    update_env_file(
        path,
        {USERS: "admin:new", f"{USERS}_PREVIOUS": "admin:changed-by-someone"},
        expect={USERS: "admin:changed-by-someone", f"{USERS}_PREVIOUS": None},
    )
    assert dotenv_values(path)[f"{USERS}_PREVIOUS"] == "admin:changed-by-someone"


# --- the OAuth cookie secret ----------------------------------------------------------------


def cookie_plan(tmp_path: Path, environ: dict | None = None, text: str = "") -> Rotation:
    path = env_file(tmp_path, text or f"{COOKIE}={OLD_COOKIE}\n")
    hosts = fleet(h1={**OAUTH}, h2={**OAUTH})
    return plan_rotation(
        settings_with(**OAUTH),
        {"rotate": "cookie"},
        {"FLOWERBED_ENV_FILE": str(path), **(environ or {})},
        hosts,
        in_run=["h1", "h2"],
    )


def test_the_cookie_secret_is_a_rotation_kind(tmp_path: Path):
    plan = cookie_plan(tmp_path)
    assert (plan.kind, plan.variable, plan.old, plan.targets) == (
        "cookie", COOKIE, OLD_COOKIE, ("h1", "h2")
    )  # fmt: skip
    assert len(plan.new) >= 64 and plan.new != OLD_COOKIE
    given = "Nq3vX8mZ2pL7wR4tY9kB6cJ1hF5dG0sA-given"
    assert cookie_plan(tmp_path, {NEW_COOKIE_VARIABLE: given}).new == given


@pytest.mark.parametrize(
    "given, problem",
    [("short-1", "shorter than"), (OLD_COOKIE, "in use now"), ("ab" * 20, "repetitive")],
)
def test_a_weak_or_unchanged_new_cookie_secret_is_refused(tmp_path: Path, given, problem):
    with pytest.raises(SettingsError, match=problem) as error:
        cookie_plan(tmp_path, {NEW_COOKIE_VARIABLE: given})
    assert error.value.key == NEW_COOKIE_VARIABLE and given not in str(error.value)


def test_a_pending_cookie_rotation_is_resumed(tmp_path: Path):
    text = f"{COOKIE}=Nq3vX8mZ2pL7wR4tY9kB6cJ1hF5dG0sA-new\n{COOKIE}_PREVIOUS={OLD_COOKIE}\n"
    plan = cookie_plan(tmp_path, text=text)
    assert plan.resumed and plan.old == OLD_COOKIE and plan.new.endswith("-new")


def test_no_cookie_secret_no_cookie_rotation(tmp_path: Path):
    path = env_file(tmp_path, f"{USERS}=admin:x\n")
    with pytest.raises(SettingsError, match="flower_cookie_secret_env: is unset"):
        plan_rotation(
            settings_with(), {"rotate": "cookie"}, {"FLOWERBED_ENV_FILE": str(path)}, FLEET, []
        )
