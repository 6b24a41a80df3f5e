"""remove.py's pure logic: what flowerbed puts on a host (one list, from the deploy's own
constants), the backup's name, the order the firewall goes in, whose accounts are deleted."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from importlib import import_module

import pytest

from flowerbed import remove
from flowerbed.flower import CREATED, CREATED_WITH_GROUP, created_accounts
from flowerbed.hostfiles import PathState
from flowerbed.resources import DEFAULTS, HOST_SCRIPTS
from flowerbed.settings import load_settings
from flowerbed.shell import command

REQUIRED = {"flower_allowed_sources": ["10.0.0.0/8"], "flower_admin_sources": ["10.0.0.1/32"]}
# paths the deploy names but does not own: the host's, or certbot's lineage (certbot delete)
NOT_FLOWERBEDS = {
    "/etc/nginx/conf.d", "/etc/nginx/sites-available/default", "/etc/nginx/sites-enabled/default",
    "/etc/ssl/certs/ca-certificates.crt", "/usr/sbin/nologin", "/usr/bin/python3",
    "/etc/letsencrypt/live/flowerbed", "/etc/letsencrypt/renewal/flowerbed.conf",
}  # fmt: skip
MODULES = ("auth", "existing_site", "firewall", "flower", "nginx", "ownership", "packages",
           "proxy_login", "tls", "verify", "venv")  # fmt: skip


def flower(**data):
    return load_settings({**DEFAULTS, **REQUIRED, **data}).flower


def path_constants() -> dict[str, str]:
    """Every module-level absolute path the deploy's modules write with."""
    found = {}
    for name in MODULES:
        for attribute, value in vars(import_module(f"flowerbed.{name}")).items():
            if attribute.isupper() and isinstance(value, str) and re.fullmatch(r"/[\w./-]+", value):
                found[f"{name}.{attribute}"] = value
    return found


def test_every_path_the_deploy_writes_is_in_the_one_list():
    # (and the directories made for them, removed when left empty)
    listed = [*(p.path for p in remove.host_paths(flower())), *remove.EMPTIED_PARENTS]
    constants = path_constants()
    assert len(constants) >= 20
    missing = {
        where: path
        for where, path in constants.items()
        if path not in NOT_FLOWERBEDS and not any(remove.inside(path, p) for p in listed)
    }
    assert not missing, f"flowerbed writes these, remove.py does not know them: {missing}"


def test_flowers_own_paths_follow_the_settings():
    custom = flower(flower_service="dash", flower_config_dir="/etc/dash",
                    flower_install_dir="/opt/dash")  # fmt: skip
    listed = {p.path for p in remove.host_paths(custom)}
    assert {"/etc/systemd/system/dash.service", "/etc/dash", "/opt/dash", "/var/lib/dash"} <= listed
    for path in (custom.env_file, custom.proxy_login_env, custom.proxy_login_nginx,
                 custom.config_file, custom.venv, custom.venvs_dir):  # fmt: skip
        assert any(remove.inside(path, p) for p in listed), path


def test_the_last_step_leaves_the_state_and_nginx_to_their_own_steps():
    f = flower()
    last = remove.files_to_remove(f)
    assert f.state_dir not in last and remove.SNIPPET not in last
    assert not set(remove.NGINX_FILES) & set(last)
    assert f.unit_file in last and f.config_dir in last and f.install_dir in last


def test_outermost_paths_only():
    paths = ["/var/lib/flowerbed", "/var/lib/flowerbed/acme", "/etc/flower", "/etc/flowerx"]
    assert remove.outermost(paths) == ["/var/lib/flowerbed", "/etc/flower", "/etc/flowerx"]


def test_the_backup_is_dated_in_utc_and_root_only():
    now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    backup = remove.backup_path("flower", now)
    assert backup == "/var/backups/flowerbed-flower-20250304T030607Z.tar.gz"
    assert remove.backup_path("flower", now + timedelta(seconds=1)) != backup
    commands = [str(c) for c in remove.backup_commands("/var/lib/flower", backup)]
    assert commands[0].startswith("umask 077 && tar --create --gzip")
    assert "--directory=/ var/lib/flower" in commands[0]
    assert commands[1:] == [f"chmod 600 {backup}", "rm -rf /var/lib/flower"]  # deleted last


def test_the_rollback_timer_is_the_one_the_firewall_script_arms():
    script = (HOST_SCRIPTS / "flowerbed-firewall").read_text()
    timer = re.search(r"^TIMER=(\S+)$", script, re.M).group(1)
    assert f"{timer}.timer" == remove.ROLLBACK_TIMER


def firewall_commands(monkeypatch, timer=False, boot=False, files=(), loaded=False) -> list[str]:
    units = {remove.ROLLBACK_TIMER: timer, remove.FIREWALL_UNIT: boot}
    monkeypatch.setattr(
        remove, "unit_state",
        lambda unit: {"running": units[unit], "enabled": units[unit], "failed": False},
    )  # fmt: skip
    answers = {remove.PathStates: {p: PathState("f", 0o644, "root", "root") for p in files},
               remove.TableLoaded: loaded}  # fmt: skip
    monkeypatch.setattr(remove.facts, "ask", lambda fact, **_: answers[fact])
    return [str(c) for c in remove.table_deleted._inner()]


def test_the_table_goes_last_once_nothing_can_load_it_again(monkeypatch):
    steps = firewall_commands(
        monkeypatch, timer=True, boot=True, files=remove.FIREWALL_BOOT_FILES, loaded=True
    )
    assert steps == [
        f"systemctl stop {remove.ROLLBACK_TIMER}",
        f"systemctl disable --now {remove.FIREWALL_UNIT}",
        str(command("rm", "-f", *sorted(remove.FIREWALL_BOOT_FILES))),
        "systemctl daemon-reload",
        "nft delete table inet flowerbed",  # one transaction, after the rest
    ]


def test_a_table_left_alone_by_its_unit_is_still_deleted(monkeypatch):
    assert firewall_commands(monkeypatch, loaded=True) == ["nft delete table inet flowerbed"]


def test_the_parts_run_in_the_documented_order():
    source = remove.remove_flowerbed._inner.__code__.co_names
    order = [
        "flower_stopped", "state_kept", "nginx_removed", "certificate_removed",
        "firewall_removed", "accounts_removed", "packages_removed", "files_removed",
    ]  # fmt: skip
    assert [name for name in source if name in order] == order


@pytest.mark.parametrize(
    ("comment", "group_exists", "deleted"),
    [
        (CREATED_WITH_GROUP, True, ("flower", "flower")),
        (CREATED_WITH_GROUP, False, ("flower",)),
        (CREATED, True, ("flower",)),  # the group was there before flowerbed
        ("", True, ()),  # made by hand, or by flowerbed before it marked its users
        ("Flower", True, ()),
    ],
)
def test_only_accounts_flowerbed_marked_are_deleted(comment, group_exists, deleted):
    found = {
        "passwd": {"flower": ["flower", "x", "998", "998", comment, "/var/lib/flower", "/x"]},
        "group": {"flower": ["flower", "x", "998", "www-data"]} if group_exists else {},
    }
    assert created_accounts(found, "flower", "flower") == deleted
    assert created_accounts({"passwd": {}, "group": {}}, "flower", "flower") == ()


def test_the_marks_are_valid_gecos():
    for mark in (CREATED, CREATED_WITH_GROUP):
        assert not set(mark) & set(":,\n")


@pytest.mark.parametrize(
    ("output", "relink"),
    [
        (["stock"], True),
        (["stock", "enabled"], False),
        ([], False),  # edited: the operator's
        (["stock", "claims /etc/nginx/sites-enabled/app"], False),
    ],
)
def test_debians_default_site_is_linked_again_only_when_stock_and_unclaimed(output, relink):
    assert remove.relink_default(remove.DefaultSite().process(output)) is relink


def test_the_default_site_check_leaves_flowerbeds_own_files_out():
    assert "grep -v '/flowerbed[^/]*$'" in remove.DEFAULT_SITE_SCRIPT


def test_what_is_found_on_a_host():
    output = ["/etc/flower", "unit: flower.service enabled enabled", "table", ""]
    assert remove.FlowerbedFound().process(output) == ["/etc/flower", "unit: flower.service",
                                                       "table"]  # fmt: skip
    assert remove.RecordedPackages().process(["nginx", "certbot", "nginx", ""]) == [
        "nginx", "certbot",
    ]  # fmt: skip


def test_the_report_says_what_was_kept_where():
    f, settings = flower(), load_settings({**DEFAULTS, **REQUIRED})
    backup = remove.backup_path("flower", datetime(2025, 1, 1, tzinfo=UTC))
    line = remove.report_line(f, settings.remove, backup, True, ["nginx", "certbot"])
    assert backup in line and "apt packages kept: nginx, certbot" in line
    none = remove.report_line(f, settings.remove, backup, False, [])
    assert backup not in none and "no state to keep" in none
