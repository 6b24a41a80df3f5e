"""Taking over a hand-made Flower, without the lab: `systemctl cat`, `ps` and `ss` output read,
which Flowers are not flowerbed's, the refusal naming them, the settings, and the takeover's
plan (its order, what it never overwrites) and report."""

from __future__ import annotations

import pytest
from settings_helpers import error_for, settings_with

from flowerbed.takeover import (
    FlowerSightings,
    backup_dir,
    foreign_flowers,
    keep_plan,
    parse_sightings,
    refusal,
    taken_over,
)

GUIDE_UNIT = """\
# /etc/systemd/system/flower.service
[Unit]
Description=Flower
[Service]
Environment=FLOWER_PASSWORD=***
ExecStart=/opt/app/venv/bin/celery -A proj --broker=redis://:***@10.0.0.5:6379/0 flower \
--port=5555 --basic_auth=*** --max_tasks=10000 --persistent=True --db=/var/lib/flower/flower.db

# /etc/systemd/system/flower.service.d/override.conf
[Service]
Restart=always"""
OURS = """\
# /etc/systemd/system/flower.service
# Managed by flowerbed. Secrets are in EnvironmentFile=, never here or on the command line.
[Unit]
Description=Celery Flower dashboard"""
GUIDE_PS = (
    "  812 flower.service  celery  /opt/app/venv/bin/python /opt/app/venv/bin/celery -A proj "
    "--broker=redis://:***@10.0.0.5:6379/0 flower --port=5555 --basic_auth=*** "
    "--db=/var/lib/flower/flower.db"
)
OURS_PS = "  900 flower.service  celery  /opt/flower/venv/bin/python /opt/flower/venv/bin/celery flower --conf=/etc/flower/flowerconfig.py"  # noqa: E501
NOISE_PS = [
    "    1 init.scope      systemd         /sbin/init",
    "  700 session-3.scope sh              sh -c echo @@flowerbed-fact0; getent passwd flower",
    "  701 session-3.scope sudo            sudo -H -n -- sh -c getent group flower",
    "  650 worker.service  celery          /opt/app/venv/bin/celery -A proj worker -E",
]
GUIDE_SS = [
    'LISTEN 0 128 0.0.0.0:22   0.0.0.0:* users:(("sshd",pid=69,fd=3))',
    'LISTEN 0 128 0.0.0.0:5555 0.0.0.0:* users:(("celery",pid=812,fd=7))',
]


def sightings_output(unit_text: str = GUIDE_UNIT, ps: list[str] | None = None) -> list[str]:
    return [
        "@@unit flower.service",
        *unit_text.splitlines(),
        "@@ps",
        *(ps if ps is not None else [*NOISE_PS, GUIDE_PS]),
        "@@ss",
        *GUIDE_SS,
    ]


def test_the_guides_unit_and_process_are_read():
    found = parse_sightings(sightings_output())
    unit = found.unit("flower.service")
    assert unit.paths == (
        "/etc/systemd/system/flower.service",
        "/etc/systemd/system/flower.service.d/override.conf",
    )
    assert not unit.managed
    assert [p.pid for p in found.flowers] == [812], "shells, sudo and workers are not Flower"
    assert found.listening[812] == ("0.0.0.0:5555",)


def test_flowerbeds_own_unit_is_recognised():
    found = parse_sightings(sightings_output(OURS, [*NOISE_PS, OURS_PS]))
    assert found.unit("flower.service").managed
    assert foreign_flowers(found, "flower.service") == []


def test_the_guides_flower_is_foreign_named_with_port_and_db():
    found = parse_sightings(sightings_output())
    (seen,) = foreign_flowers(found, "flower.service")
    assert (seen.unit, seen.pids, seen.port, seen.db) == (
        "flower.service", (812,), 5555, "/var/lib/flower/flower.db",
    )  # fmt: skip
    message = refusal([seen], "flower.service")
    assert "flower.service" in message and "0.0.0.0:5555" in message
    assert "nothing was changed" in message
    assert "flower_takeover_unit = 'flower.service'" in message
    assert "flower_takeover_db = '/var/lib/flower/flower.db'" in message
    assert "not written by flowerbed, which would overwrite it" in message


def test_a_named_takeover_is_not_refused():
    found = parse_sightings(sightings_output())
    assert foreign_flowers(found, "flower.service", "flower.service") == []


def test_a_stopped_unit_of_flowerbeds_name_is_refused():
    found = parse_sightings(sightings_output(ps=NOISE_PS))
    (seen,) = foreign_flowers(found, "flower.service")
    assert seen.pids == () and seen.port == 5555
    assert "stopped, port 5555" in refusal([seen], "flower.service")


def test_a_flower_under_another_unit_or_none_is_foreign():
    other = GUIDE_PS.replace("flower.service", "flower-old.service")
    loose = "  955 session-4.scope flower  /usr/local/bin/flower --port=5566"
    found = parse_sightings(sightings_output(OURS, [OURS_PS, other, loose]))
    seen = foreign_flowers(found, "flower.service")
    assert [(s.unit, s.pids, s.port) for s in seen] == [
        ("flower-old.service", (812,), 5555), ("", (955,), 5566),
    ]  # fmt: skip
    message = refusal(seen, "flower.service")
    assert "flower_takeover_unit = 'flower-old.service'" in message
    assert "a process outside any service (pid 955, port 5566)" in message
    assert foreign_flowers(found, "flower.service", "flower-old.service")[0].pids == (955,)


def test_the_fact_redacts_on_the_host_and_asks_every_unit():
    raw = FlowerSightings().command(units=("flower.service", "old.service")).get_raw_value()
    assert "systemctl cat -- flower.service" in raw and "systemctl cat -- old.service" in raw
    assert "ps -eo pid=,unit=,comm=,args=" in raw and "ss -Htlnp" in raw
    assert raw.index("sed -E") > raw.index("ss -Htlnp"), "everything goes through the redaction"


def test_settings():
    settings = settings_with(flower_takeover_unit="flower", flower_takeover_db="/var/lib/f/f.db")
    assert settings.takeover.unit == "flower.service"
    assert settings_with().takeover.unit == ""
    assert "not a unit name" in error_for(flower_takeover_unit="flower service; rm")
    assert "absolute file path" in error_for(flower_takeover_db="flower.db")
    assert "absolute file path" in error_for(flower_takeover_db="/var/lib/../etc/shadow")


STATE = "/var/lib/flower/flower"
OWNER = ("flower", "flower")


def plan(present: set[str], db: str = "/var/lib/flower/flower.db", text: str = GUIDE_UNIT):
    files = parse_sightings(sightings_output(text)).unit("flower.service")
    return keep_plan("flower.service", files, db, present, STATE, OWNER)


def test_the_plan_moves_the_unit_aside_then_reloads_then_copies_every_state_file():
    backup = backup_dir("flower.service")
    made = plan({"/var/lib/flower/flower.db", "/var/lib/flower/flower.db.dat"})
    steps = [" ".join(argv) for argv in made.commands]
    unit_to = f"{backup}/etc/systemd/system/flower.service"
    moved = steps.index(f"mv -f -- /etc/systemd/system/flower.service {unit_to}")
    assert steps[moved + 1] == f"chmod 600 {unit_to}"
    assert steps.index("systemctl daemon-reload") > moved
    assert f"install -d -m 700 {backup}" == steps[0]
    copies = [s for s in steps if s.startswith("install -m 600 -o flower -g flower")]
    assert copies == [
        f"install -m 600 -o flower -g flower -- /var/lib/flower/flower.db {STATE}",
        f"install -m 600 -o flower -g flower -- /var/lib/flower/flower.db.dat {STATE}.dat",
    ]
    assert steps.index(copies[0]) > steps.index("systemctl daemon-reload")
    assert f"cp --preserve=timestamps -- /var/lib/flower/flower.db {backup}/state/" in steps
    assert not [s for s in steps if s.startswith(("rm ", "rm\t"))], "nothing is deleted"
    assert "rmdir --ignore-fail-on-non-empty -- /etc/systemd/system/flower.service.d" in steps
    report = made.report
    assert f"kept root-only (0600) under {backup}" in report
    assert f"copied to flowerbed's {STATE}" in report and f"{backup}/state" in report
    assert "port 5555" in report


def test_the_old_states_files_are_never_written_over():
    # gdbm's flower.db and Berkeley DB's flower.db.db: the latter's name in flowerbed's state
    # (flower + .db) is the former
    old = {"/var/lib/flower/flower.db", "/var/lib/flower/flower.db.db"}
    steps = [" ".join(argv) for argv in plan(old).commands]
    assert not [s for s in steps if s.endswith(f" {STATE}.db")]
    assert f"install -m 600 -o flower -g flower -- /var/lib/flower/flower.db {STATE}" in steps
    assert "not copied" in plan(old).report


def test_flowerbeds_own_state_is_never_overwritten():
    made = plan({"/var/lib/flower/flower.db", STATE})
    steps = [" ".join(argv) for argv in made.commands]
    assert not [s for s in steps if STATE in s.split()[-1:]]
    assert "NOT copied" in made.report and STATE in made.report


def test_no_state_or_no_db_named():
    assert "no state found" in plan(set()).report
    made = plan(set(), db="")
    assert "state" not in made.report.replace("takeover", "")
    assert made.commands[-1] == ("systemctl", "daemon-reload")


def test_a_second_run_finds_nothing_to_take_over():
    ours = parse_sightings(sightings_output(OURS, [OURS_PS]))
    assert taken_over(ours, "flower.service", "flower.service")
    gone = parse_sightings(["@@unit old.service", "@@ps", "@@ss"])
    assert taken_over(gone, "old.service", "flower.service")
    guide = parse_sightings(sightings_output())
    assert not taken_over(guide, "flower.service", "flower.service")


@pytest.mark.parametrize("unit", ["flower.service", "flower-old.service"])
def test_the_backup_is_named_after_the_unit(unit):
    assert backup_dir(unit) == f"/var/backups/flowerbed-takeover-{unit}"
