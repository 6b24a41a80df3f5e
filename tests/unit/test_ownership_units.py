"""Flower's names decided from the host (flowerbed/ownership.py): issue 19's cases as a host shows
them, and the fact's own shell script run here against a hand-made unit with a password,
flowerbed's rendered unit, and full, world-writable, symlinked and missing directories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from settings_helpers import settings_with

from flowerbed import ownership, remove
from flowerbed.flower import CREATED, CREATED_WITH_GROUP, unit_text
from flowerbed.ownership import Directory, HostNames, decide, names_script

ROOT_DIR = Directory("d", "root", "root", 0o755)
FRESH_DIRS = {"/": ROOT_DIR, "/etc": ROOT_DIR, "/opt": ROOT_DIR, "/var": ROOT_DIR,
              "/var/lib": ROOT_DIR, "/run": ROOT_DIR, "/srv": ROOT_DIR}  # fmt: skip
ADMIN = ["admin", "x", "1000", "1000", "Debian", "/home/admin", "/bin/bash"]
DEFAULT_CREATED = (
    "created dir:/etc/flower", "created dir:/opt/flower", "created dir:/run/flower",
    "created dir:/var/lib/flower", "created group:flower", "created unit:flower",
    "created user:flower",
)  # fmt: skip
PASSWORD = "Hand-made-pw-4711"


def host(**parts) -> dict:
    """A HostNames value: a fresh Debian host, plus `parts`."""
    found = HostNames.default()
    found["dirs"] = dict(FRESH_DIRS)
    for key, value in parts.items():
        found[key] = {**found[key], **value} if isinstance(found[key], dict) else value
    return found


def flower(**data):
    return settings_with(**data).flower


def verdict(found: dict, extra=(), **data):
    return decide(flower(**data), found, extra)


def test_a_fresh_host_gets_every_name_created_and_recorded():
    result = verdict(host())
    assert result.refused == () and result.record == DEFAULT_CREATED


def test_a_host_with_the_record_changes_nothing():
    found = host(record=list(DEFAULT_CREATED), users={"flower": ["flower"] * 7})
    assert verdict(found).record == DEFAULT_CREATED


# --- the cases --------------------------------------------------------------------


def test_the_cloud_images_login_user_is_refused_with_the_fix():
    found = host(users={"admin": ADMIN})
    result = verdict(found, flower_user="admin")
    (line,) = result.refused
    assert line == (
        "user admin (flower_user) is not flowerbed's: an account of this host (uid 1000, home "
        "/home/admin, shell /bin/bash)"
    )
    message = result.message()
    assert "nothing was changed" in message and "set flower_user to names" in message
    assert 'flower_names_claimed = ["user:admin"]' in message


def test_incus_admin_is_refused_naming_its_members():
    found = host(groups={"incus-admin": ["incus-admin", "x", "994", "admin,ops"]})
    (line,) = verdict(found, flower_group="incus-admin").refused
    assert line.startswith("group incus-admin (flower_group)") and "members admin,ops" in line


def test_prometheus_unit_and_state_are_refused():
    unit = "/lib/systemd/system/prometheus.service"
    found = host(
        unit_files={unit: {"kind": "file", "mine": False, "fields": []}},
        loaded={"Id": "prometheus.service", "LoadState": "loaded", "FragmentPath": unit},
        dirs={"/var/lib/prometheus": Directory("d", "prometheus", "prometheus", 0o755)},
        full={"/var/lib/prometheus"},
    )
    result = verdict(found, flower_service="prometheus")
    assert len(result.refused) == 2, result.refused
    assert (
        f"unit prometheus.service (flower_service) is not flowerbed's: {unit} was not written"
        in (result.refused[0])
    )
    assert result.refused[1] == (
        "directory /var/lib/prometheus (flower_service) is not flowerbed's: holds files, belongs "
        "to prometheus (prometheus:prometheus 755)"
    )
    assert result.claimable == ("unit:prometheus", "dir:/var/lib/prometheus")


def test_redis_state_as_the_workdir_is_refused_until_claimed_and_never_chowned():
    found = host(dirs={"/var/lib/redis": Directory("d", "redis", "redis", 0o750)},
                 full={"/var/lib/redis"})  # fmt: skip
    (line,) = verdict(found, flower_app_workdir="/var/lib/redis").refused
    assert line.startswith(
        "directory /var/lib/redis (flower_app_workdir) is not flowerbed's: holds"
    )
    claimed = verdict(found, flower_app_workdir="/var/lib/redis",
                      flower_names_claimed=["dir:/var/lib/redis"])  # fmt: skip
    assert claimed.refused == () and "adopted dir:/var/lib/redis" in claimed.record
    rendered = settings_with(flower_app_workdir="/var/lib/redis")
    assert "/var/lib/redis" not in str(
        [e for e in rendered.flower.names() if e[2] != "flower_app_workdir"]
    )


def test_a_missing_workdir_is_refused_whatever_is_claimed():
    data = {"flower_app_workdir": "/srv/app", "flower_names_claimed": ["dir:/srv/app"]}
    (line,) = verdict(host(), **data).refused
    assert "(flower_app_workdir): does not exist" in line


@pytest.mark.parametrize(
    ("data", "found", "named"),
    [
        ({"flower_user": "nobody"},
         {"users": {"nobody": ["nobody", "x", "65534", "65534", "nobody", "/nonexistent",
                               "/usr/sbin/nologin"]}}, "user nobody"),
        ({"flower_user": "www-data", "flower_socket_clients": []},
         {"users": {"www-data": ["www-data", "x", "33", "33", "www-data", "/var/www",
                                 "/usr/sbin/nologin"]}}, "user www-data"),
        ({"flower_group": "sudo"}, {"groups": {"sudo": ["sudo", "x", "27", "admin"]}},
         "group sudo"),
        ({"flower_group": "shadow"}, {"groups": {"shadow": ["shadow", "x", "42", ""]}},
         "group shadow"),
        ({"flower_group": "ssh"}, {"groups": {"ssh": ["ssh", "x", "101", ""]}}, "group ssh"),
        ({"flower_service": "ssh"},
         {"unit_files": {"/lib/systemd/system/ssh.service":
                         {"kind": "file", "mine": False, "fields": []}}}, "unit ssh.service"),
        ({"flower_service": "sshd"},
         {"loaded": {"Id": "ssh.service", "LoadState": "loaded",
                     "FragmentPath": "/lib/systemd/system/ssh.service"}}, "an alias"),
        ({"flower_service": "dpkg"},
         {"dirs": {"/var/lib/dpkg": ROOT_DIR}, "full": {"/var/lib/dpkg"}},
         "directory /var/lib/dpkg (flower_service) is not flowerbed's: holds files"),
        ({"flower_service": "lock"},
         {"dirs": {"/run/lock": Directory("d", "root", "root", 0o1777)}},
         "directory /run/lock (flower_service) is not flowerbed's: others can write to it"),
        ({"flower_config_dir": "/etc/nginx"},
         {"dirs": {"/etc/nginx": ROOT_DIR}, "full": {"/etc/nginx"}},
         "directory /etc/nginx (flower_config_dir) is not flowerbed's: holds files"),
    ],
)  # fmt: skip
def test_names_of_the_system_and_other_services_are_refused(data, found, named):
    result = verdict(host(**found), **data)
    assert len(result.refused) == 1 and named in result.refused[0], result.refused


@pytest.mark.parametrize("name", ["root"])
def test_root_is_never_flowers_even_when_claimed(name):
    found = host(users={name: [name, "x", "0", "0", name, "/root", "/bin/bash"]},
                 groups={name: [name, "x", "0", ""]})  # fmt: skip
    result = verdict(found, flower_user=name, flower_group=name,
                     flower_names_claimed=[f"user:{name}", f"group:{name}"])  # fmt: skip
    assert len(result.refused) == 2 and all("no claim lets through" in r for r in result.refused)
    assert result.claimable == ()


def test_a_directory_under_a_parent_others_can_write_is_refused_even_when_claimed():
    found = host(dirs={"/srv/drop": Directory("d", "root", "root", 0o1777)})
    data = {"flower_config_dir": "/srv/drop/flower",
            "flower_names_claimed": ["dir:/srv/drop/flower"]}  # fmt: skip
    (line,) = verdict(found, **data).refused
    assert "under /srv/drop (root:root 1777)" in line and "no claim lets through" in line
    group = host(dirs={"/srv/team": Directory("d", "root", "staff", 0o2775)})
    (line,) = verdict(group, flower_config_dir="/srv/team/flower").refused
    assert "under /srv/team" in line


def test_a_symlinked_directory_is_refused_even_when_claimed():
    found = host(dirs={"/opt/flower": Directory("l", "root", "root", 0o777)})
    (line,) = verdict(found, flower_names_claimed=["dir:/opt/flower"]).refused
    assert line.startswith("directory /opt/flower (flower_install_dir): a symlink")


def test_an_empty_directory_of_roots_is_adopted_without_a_claim():
    found = host(dirs={"/srv/flower": ROOT_DIR})
    result = verdict(found, flower_config_dir="/srv/flower")
    assert result.refused == () and "adopted dir:/srv/flower" in result.record


def test_every_refused_name_is_in_one_message():
    found = host(
        users={"admin": ADMIN},
        groups={"admin": ["admin", "x", "1000", ""]},
        unit_files={"/etc/systemd/system/metrics.service":
                    {"kind": "file", "mine": False, "fields": []}},
        dirs={"/opt/tools": ROOT_DIR, "/var/lib/metrics": ROOT_DIR},
        full={"/opt/tools", "/var/lib/metrics"},
    )  # fmt: skip
    result = verdict(found, flower_user="admin", flower_group="admin", flower_service="metrics",
                     flower_install_dir="/opt/tools")  # fmt: skip
    assert len(result.refused) == 5
    assert "the primary group of admin" in result.refused[1]
    assert ('flower_names_claimed = ["user:admin", "group:admin", "unit:metrics", '
            '"dir:/opt/tools", "dir:/var/lib/metrics"]') in result.message()  # fmt: skip
    assert "set flower_user, flower_group, flower_service, flower_install_dir to" in (
        result.message()
    )


def test_claimed_names_are_adopted_and_stay_so():
    found = host(users={"admin": ADMIN})
    result = verdict(found, flower_user="admin", flower_names_claimed=["user:admin"])
    assert result.refused == () and "adopted user:admin" in result.record
    later = verdict({**found, "record": list(result.record)}, flower_user="admin")
    assert later.refused == () and later.record == result.record


def test_a_host_deployed_before_the_record_is_recognised_by_its_unit_and_mark():
    settings = settings_with()
    unit = "/etc/systemd/system/flower.service"
    fields = parsed_unit_fields(unit_text(settings.flower))
    found = host(
        users={"flower": ["flower", "x", "998", "998", CREATED_WITH_GROUP, "/var/lib/flower",
                          "/usr/sbin/nologin"]},
        groups={"flower": ["flower", "x", "998", "www-data"]},
        unit_files={unit: {"kind": "file", "mine": True, "fields": fields}},
        loaded={"Id": "flower.service", "LoadState": "loaded", "FragmentPath": unit},
        dirs={"/etc/flower": ROOT_DIR, "/opt/flower": ROOT_DIR, "/run/flower":
              Directory("d", "flower", "flower", 0o750),
              "/var/lib/flower": Directory("d", "flower", "flower", 0o700)},
        full={"/etc/flower", "/opt/flower", "/run/flower", "/var/lib/flower"},
    )  # fmt: skip
    result = decide(settings.flower, found)
    assert result.refused == () and result.record == DEFAULT_CREATED
    # without the unit's header, the same host is refused (what it names is no longer proof)
    found["unit_files"][unit]["mine"] = False
    assert len(decide(settings.flower, found).refused) == 5  # the unit and its 4 directories


def test_a_user_with_the_gecos_mark_is_flowerbeds():
    marked = ["flower", "x", "998", "998", CREATED, "/var/lib/flower", "/usr/sbin/nologin"]
    assert verdict(host(users={"flower": marked})).refused == ()


def test_names_another_part_hands_over_pass_and_are_recorded_as_created():
    unit = "/etc/systemd/system/flower.service"
    found = host(
        unit_files={unit: {"kind": "file", "mine": False, "fields": []}},
        dirs={"/var/lib/flower": Directory("d", "root", "root", 0o700)},
        full={"/var/lib/flower"},
    )
    assert len(verdict(found).refused) == 2
    extra = ("unit:flower", "dir:/var/lib/flower", "unit:flower-legacy")
    result = verdict(found, extra=extra)
    assert result.refused == ()
    for claim in extra:
        assert f"created {claim}" in result.record


def test_a_name_handed_over_later_turns_an_adopted_line_into_created():
    """Claimed first (the refusal's fix), taken over on the next run: flowerbed's state now
    lives there, so remove.py must take it off, not keep it under a deleted uid."""
    found = host(
        dirs={"/var/lib/flower": Directory("d", "root", "root", 0o700)}, full={"/var/lib/flower"}
    )
    first = verdict(found, flower_names_claimed=["dir:/var/lib/flower"])
    assert "adopted dir:/var/lib/flower" in first.record
    later = verdict({**found, "record": list(first.record)}, extra=("dir:/var/lib/flower",))
    assert "created dir:/var/lib/flower" in later.record
    assert "adopted dir:/var/lib/flower" not in later.record


def test_the_entry_for_other_parts_normalises_unit_names():
    assert ownership.normalised("unit:flower-legacy.service") == "unit:flower-legacy"
    assert ownership.normalised("dir:/var/lib/flower") == "dir:/var/lib/flower"


def test_the_record_is_written_whole_from_argument_lists():
    commands = [str(c) for c in ownership.record_commands(DEFAULT_CREATED)]
    assert commands[1].startswith("printf '%s\\n' 'created dir:/etc/flower'")
    assert commands[-1] == f"mv -f {ownership.RECORD}.new {ownership.RECORD}"


# --- the fact's own script, run here ------------------------------------------------------


def parsed_unit_fields(text: str) -> list[tuple[str, str]]:
    """What the fact prints of a unit file, through its own script."""
    return run_fact_on_unit(text)["unit_files"]["UNIT"]["fields"]


def run_fact_on_unit(text: str, tmp: Path | None = None) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        base = Path(tmp or directory)
        (base / "units").mkdir(exist_ok=True)
        (base / "units" / "flower.service").write_text(text)
        found, _ = run_fact(base, dirs=())
    (path,) = found["unit_files"]
    return {**found, "unit_files": {"UNIT": found["unit_files"][path]}}


def run_fact(base: Path, dirs: tuple[str, ...], unit: str = "flower") -> tuple[dict, str]:
    script = names_script("root", "root", unit, dirs, (str(base / "units"), str(base / "none")),
                          str(base / "claimed"))  # fmt: skip
    output = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    return HostNames().process(output.stdout.splitlines()), output.stdout


def test_the_fact_never_prints_a_hand_made_unit(tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "flower.service").write_text(
        f"[Service]\nDescription=Celery Flower dashboard\nUser=flower\n"
        f"ExecStart=/usr/bin/celery flower --basic_auth=admin:{PASSWORD}\n"
    )
    found, output = run_fact(tmp_path, dirs=())
    assert PASSWORD not in output and "basic_auth" not in output and "User=" not in output
    assert found["unit_files"] == {
        str(tmp_path / "units" / "flower.service"): {"kind": "file", "mine": False, "fields": []}
    }


def test_the_fact_never_prints_a_hand_made_units_first_line(tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "flower.service").write_text(f"# password {PASSWORD}\n[Unit]\n")
    _, output = run_fact(tmp_path, dirs=())
    assert PASSWORD not in output


def test_the_fact_prints_only_the_naming_fields_of_flowerbeds_unit(tmp_path):
    settings = settings_with(flower_app="proj.celery:app", flower_app_source="proj==1")
    text = unit_text(settings.flower, [("OKTA_BASE_URL", "https://x.okta.com")])
    text = text.replace("--conf=", f"--broker=redis://:{PASSWORD}@h/0 --conf=")  # edited by hand
    found = run_fact_on_unit(text, tmp_path)
    fields = found["unit_files"]["UNIT"]["fields"]
    assert found["unit_files"]["UNIT"]["mine"]
    assert dict(fields) == {
        "Description": "Celery Flower dashboard", "User": "flower", "Group": "flower",
        "EnvironmentFile": "/etc/flower/flower-proxy-login.env", "WorkingDirectory":
        "/var/lib/flower", "ExecStart": "/opt/flower/venv/bin/celery", "Conf":
        "/etc/flower/flowerconfig.py", "RuntimeDirectory": "flower", "StateDirectory": "flower",
    }  # fmt: skip
    printed = str(fields)
    assert PASSWORD not in printed and "okta" not in printed and "proj.celery" not in printed
    assert ownership.named_by_units(found) == {
        "user:flower", "group:flower", "dir:/etc/flower", "dir:/opt/flower",
        "dir:/var/lib/flower", "dir:/run/flower",
    }  # fmt: skip


def test_the_fact_reads_full_world_writable_symlinked_and_missing_directories(tmp_path):
    full, open_, empty = tmp_path / "full", tmp_path / "open", tmp_path / "empty"
    for directory in (full, open_, empty):
        directory.mkdir()
    (full / "data").write_text("x")
    open_.chmod(0o1777)
    (tmp_path / "link").symlink_to(full)
    (tmp_path / "claimed").write_text("created user:flower\nadopted dir:/srv/x\n")
    names = tuple(str(tmp_path / n) for n in ("full", "open", "empty", "link", "missing"))
    found, _ = run_fact(tmp_path, dirs=names)
    dirs = found["dirs"]
    assert dirs[str(full)].kind == "d" and not dirs[str(full)].others_write
    assert dirs[str(open_)].mode == 0o1777 and dirs[str(open_)].others_write
    assert dirs[str(tmp_path / "link")].kind == "l"
    assert str(tmp_path / "missing") not in dirs
    assert found["full"] == {str(full)}, "a symlink or an empty directory holds nothing"
    assert dirs["/"].kind == "d" and str(tmp_path) in dirs, "every directory above them"
    assert found["users"]["root"][2] == "0" and found["groups"]["root"][2] == "0"
    assert ownership.recorded(found) == {"user:flower": "created", "dir:/srv/x": "adopted"}


def test_no_record_is_told_from_an_empty_one(tmp_path):
    found, _ = run_fact(tmp_path, dirs=())
    assert found["record"] is None
    (tmp_path / "claimed").write_text("")
    found, _ = run_fact(tmp_path, dirs=())
    assert found["record"] == []


# --- remove.py ------------------------------------------------------------------------------


def test_remove_deletes_only_accounts_the_record_lists_as_created():
    found = {"passwd": {"flower": [], "svcflower": [], "admin": []},
             "group": {"flower": [], "svcflower": []}}  # fmt: skip
    record = {"user:flower": "created", "group:flower": "created",
              "user:svcflower": "adopted", "group:svcflower": "adopted"}  # fmt: skip
    users, groups = remove.accounts_to_delete(found, "svcflower", "svcflower", record)
    assert (users, groups) == (["flower"], ["flower"])


def test_remove_without_a_record_goes_by_the_gecos_mark():
    marked = {"passwd": {"flower": ["flower", "x", "1", "1", CREATED_WITH_GROUP, "/", "/"]},
              "group": {"flower": []}}  # fmt: skip
    assert remove.accounts_to_delete(marked, "flower", "flower", None) == (["flower"], ["flower"])
    # a record that does not list them: kept, whatever the comment says
    assert remove.accounts_to_delete(marked, "flower", "flower", {}) == ([], [])


def test_remove_keeps_adopted_units_and_directories_but_not_flowerbeds_files_in_them():
    f = flower()
    kept = {"unit:flower", "dir:/etc/flower", "dir:/opt/flower"}
    paths = remove.files_to_remove(f, kept)
    assert f.unit_file not in paths and f.config_dir not in paths and f.install_dir not in paths
    assert {f.config_file, f.env_file, f.proxy_login_env, f.venv, f.venvs_dir} <= set(paths)
    # the modules Flower runs (watchdog, socket keeper) and the instances' directory are
    # flowerbed's files in it too
    ours = {"memory_watchdog.py", "socket_keeper.py", "instances"}
    assert {f"{f.config_dir}/{name}" for name in ours} <= set(paths)
    assert set(remove.files_to_remove(f)) >= {f.unit_file, f.config_dir, f.install_dir}
