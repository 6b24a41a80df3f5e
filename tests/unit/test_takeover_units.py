"""The takeover's pure parts (flowerbed/takeover.py, flowerbed/settings/takeover.py) and its
host-side script's (files/flowerbed-takeover): the keys' grammar, what is refused and how the
message reads, what the host's answer may hold, and the state copy across dbm backends, run on
Debian's own python3 (with gdbm) as the hosts run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

from flowerbed import takeover
from flowerbed.settings import SettingsError, Takeover, validate

SCRIPT = takeover.SCRIPT_SOURCE
DEBIAN_PYTHON = "/usr/bin/python3"
LEGACY = "flower-legacy.service"
DB = "/var/lib/flower/flower.db"
NAMED = Takeover(unit=LEGACY, state=DB)
NONE = Takeover(unit="", state="")


def script_module(monkeypatch):
    """The host-side script as a module (no bytecode left beside it: files/ ships in the wheel)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return SourceFileLoader("flowerbed_takeover_script", str(SCRIPT)).load_module()


def unit(name=LEGACY, runs=True, active="active", enabled="enabled", flowerbed=False,
         load="loaded", listens=("0.0.0.0:5555", "[::]:5555"), db=DB) -> dict:  # fmt: skip
    return {"unit": name, "load": load, "active": active, "enabled": enabled,
            "fragment": f"/etc/systemd/system/{name}", "dropins": [], "flowerbed": flowerbed,
            "runs_flower": runs, "db": db if runs else "", "cgroup": f"/system.slice/{name}",
            "listens": list(listens)}  # fmt: skip


def takeover_errors(**data) -> list[str]:
    _, problems = validate(data)
    return [str(e) for e in problems.errors if e.key.startswith("flower_takeover_")]


# --- the keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [LEGACY, "flower.service", "flower@app1.service", "a:b.service"])
def test_unit_names_accepted(name):
    assert takeover_errors(flower_takeover_unit=name, flower_takeover_state=DB) == []


@pytest.mark.parametrize(
    "name", ["flower", "flower legacy.service", "x.socket", "flowerbed-firewall.service",
             "a;b.service", "../x.service", 5],
)  # fmt: skip
def test_bad_unit_names_refused(name):
    (error,) = takeover_errors(flower_takeover_unit=name, flower_takeover_state=DB)
    assert error.startswith("flower_takeover_unit: ") and "Fix: " in error


@pytest.mark.parametrize("path", ["relative/x.db", "/var/lib/../x", "/x", "/a b/c", "/var/lib/"])
def test_bad_state_paths_refused(path):
    (error,) = takeover_errors(flower_takeover_unit=LEGACY, flower_takeover_state=path)
    assert error.startswith("flower_takeover_state: ") and "Fix: " in error


def test_both_keys_or_neither():
    (error,) = takeover_errors(flower_takeover_unit=LEGACY)
    assert error.startswith("flower_takeover_state: empty while flower_takeover_unit is set")
    (error,) = takeover_errors(flower_takeover_state=DB)
    assert error.startswith("flower_takeover_unit: empty while flower_takeover_state is set")
    assert takeover_errors() == []


def test_every_error_at_once():
    errors = takeover_errors(flower_takeover_unit="bad unit", flower_takeover_state="rel")
    assert [e.split(":")[0] for e in errors] == ["flower_takeover_unit", "flower_takeover_state"]


def test_a_secret_pasted_as_the_state_is_not_quoted_back():
    with pytest.raises(SettingsError) as raised:
        Takeover.__dataclass_fields__["state"].metadata["check"](
            "flower_takeover_state", "redis://:hunter2@x/0"
        )
    assert "hunter2" not in str(raised.value)


# --- what is refused ------------------------------------------------------------------------


def test_a_running_flower_not_named_is_refused_with_the_fix_filled_in():
    found = {"units": [unit()], "processes": [], "backups": []}
    units, processes = takeover.other_flowers(found, NONE)
    message = takeover.refusal(units, processes)
    assert f"{LEGACY} listens on 0.0.0.0:5555, [::]:5555 with --db {DB}" in message
    assert f"flower_takeover_unit = '{LEGACY}'" in message
    assert f"flower_takeover_state = '{DB}'" in message
    assert "nothing was changed" in message


@pytest.mark.parametrize(
    "other",
    [unit(flowerbed=True), unit(active="inactive"), unit(runs=False), unit(active="failed")],
)
def test_not_another_flower(other):
    assert takeover.other_flowers({"units": [other], "processes": []}, NONE) == ([], [])


def test_the_named_unit_is_not_another_flower():
    assert takeover.other_flowers({"units": [unit()], "processes": []}, NAMED) == ([], [])


def test_an_enabled_stopped_flower_is_a_warning_only():
    found = {"units": [unit(active="inactive")], "processes": []}
    assert [u["unit"] for u in takeover.stopped_flowers(found, NONE)] == [LEGACY]
    assert takeover.other_flowers(found, NONE) == ([], [])


def test_a_flower_from_a_shell_is_named_by_process_and_never_offered_as_its_cgroup():
    process = {"pid": 1719, "program": "python3", "cgroup": "/system.slice/ssh.service",
               "listens": ["0.0.0.0:5566"]}  # fmt: skip
    units, processes = takeover.other_flowers({"units": [], "processes": [process]}, NAMED)
    message = takeover.refusal(units, processes)
    assert "process 1719 (python3, cgroup /system.slice/ssh.service)" in message
    assert "flower_takeover_unit = 'ssh.service'" not in message


@pytest.mark.parametrize(
    ("found", "plan"),
    [
        ({"units": [unit()], "backups": []}, "take"),
        ({"units": [unit(load="not-found")], "backups": [f"/var/backups/x-{LEGACY}-1"]}, "done"),
        ({"units": [unit(load="not-found")], "backups": []}, "refuse"),
        ({"units": [unit(flowerbed=True)], "backups": []}, "refuse"),
        # the old unit was named like flowerbed's own (flower.service): flowerbed's by now
        ({"units": [unit(flowerbed=True)], "backups": [f"/var/backups/x-{LEGACY}-1"]}, "done"),
        ({"units": [unit(runs=False)], "backups": []}, "refuse"),
    ],
)
def test_takeover_plan(found, plan):
    assert takeover.takeover_plan(found, NAMED)[0] == plan


def test_ssh_service_named_is_refused():
    ssh = Takeover(unit="ssh.service", state=DB)
    found = {"units": [unit("ssh.service", runs=False, listens=("0.0.0.0:22",))], "backups": []}
    plan, message = takeover.takeover_plan(found, ssh)
    assert plan == "refuse"
    assert "ssh.service does not run Flower" in message and "left running" in message
    assert takeover.ports_closing(found, ssh) == {(22, "tcp")}  # never asked: the host fails


def test_the_old_flowers_ports_may_close():
    found = {"units": [unit()], "processes": []}
    assert takeover.ports_closing(found, NAMED) == {(5555, "tcp")}
    assert takeover.ports_closing(found, NONE) == set()


def test_the_names_hook_for_the_names_check():
    assert takeover.names_taken_over(NONE) is None
    assert takeover.names_taken_over(NAMED) == takeover.TakenOver(LEGACY, "/var/lib/flower")


@pytest.mark.parametrize(
    ("unit", "state", "handed"),
    [
        ("flower-legacy.service", "/var/lib/flower/flower.db", ("dir:/var/lib/flower",)),
        ("flower.service", "/var/lib/flower/flower.db",
         ("unit:flower.service", "dir:/var/lib/flower")),
        ("flower-legacy.service", "/opt/flower/flower.db", ()),  # never the install dir
        ("", "", ()),
    ],
)  # fmt: skip
def test_only_flowerbeds_own_names_go_to_the_names_check_as_created(unit, state, handed):
    sources = {"flower_allowed_sources": ["10.0.0.0/8"], "flower_admin_sources": ["10.0.0.1/32"]}
    data = {"flower_takeover_unit": unit, "flower_takeover_state": state, **sources}
    settings, problems = validate(data, set(data))
    assert not problems.errors, problems.errors
    assert takeover.takeover_names(settings.takeover, settings.flower) == handed


def test_closing_line_says_what_was_kept_where():
    report = {"backup": "/var/backups/b", "kept": [], "masked": False, "records": 2,
              "note": "2 records copied from dbm.gnu"}  # fmt: skip
    line = takeover.closing_line(LEGACY, report, "/var/lib/flower/flower")
    assert line.startswith(f"takeover: {LEGACY} stopped and disabled")
    assert "/var/backups/b/" in line and "into /var/lib/flower/flower" in line


# --- the host-side script -------------------------------------------------------------------


def test_the_look_never_sends_a_command_line(monkeypatch):
    module = script_module(monkeypatch)
    argv = ["/opt/f/bin/celery", "--broker=redis://:pw@x/0", "flower", "--port=5555",
            "--basic_auth=admin:s3cret", f"--db={DB}"]  # fmt: skip
    exec_start = "{ path=/opt/f/bin/celery ; argv[]=" + " ".join(argv) + " ; ignore_errors=no }"
    assert module.exec_argv(exec_start) == argv
    assert module.flower_argv(argv) and not module.flower_argv(["/usr/sbin/sshd", "-D"])
    assert module.db_of(argv) == DB and module.db_of(["flower", "--db", "/x/y"]) == "/x/y"
    shown = {"Id": LEGACY, "LoadState": "loaded", "ExecStart": exec_start, "FragmentPath": ""}
    report = json.dumps(module.unit_report(shown, {}))
    assert "s3cret" not in report and "pw@" not in report and "--port" not in report


def copy_on_debian_python(tmp_path: Path, writer: str, reader: str, steps: str) -> dict:
    """`steps` run on Debian's python3 with the script loaded as `m`; old state written with
    the `writer` backend, flowerbed's default set to `reader`. Prints a JSON result."""
    code = textwrap.dedent(f"""
        import dbm, importlib.machinery, json, os, shutil, sys
        import {writer}, {reader}
        m = importlib.machinery.SourceFileLoader("s", {str(SCRIPT)!r}).load_module()
        tmp = {str(tmp_path)!r}
        os.makedirs(tmp + "/var/lib/flower")
        old = tmp + "/var/lib/flower/flower.db"
        with {writer}.open(old, "n") as db:
            for i in range(50):
                db[b"task-%d" % i] = b"record-%d" % i
        try:  # dbm loads its backends on the first open; then flowerbed's is made `reader`
            dbm.open(tmp + "/none", "r")
        except dbm.error[0]:
            dbm._defaultmod = {reader}
        owner = os.getuid()
    """) + textwrap.dedent(steps)
    argv = [DEBIAN_PYTHON, "-B", "-I", "-S", "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


COPY = """
    backup = tmp + "/backup"
    moved = [m.moved(p, backup) for p in m.database_files(old)]
    target = tmp + "/var/lib/flower/flower"
    user = __import__("pwd").getpwuid(owner).pw_name
    group = __import__("grp").getgrgid(os.getgid()).gr_name
    records, note = m.copied(backup + old, target, user + ":" + group)
    with dbm.open(target, "r") as db:
        back = {k.decode(): db[k].decode() for k in db.keys()}
    print(json.dumps({"records": records, "note": note, "back": back, "kind": dbm.whichdb(target),
                      "left": sorted(os.listdir(tmp + "/var/lib/flower")),
                      "modes": [oct(os.stat(tmp + "/var/lib/flower/" + f).st_mode & 0o777)
                                for f in os.listdir(tmp + "/var/lib/flower")]}))
"""


@pytest.fixture
def debian_python():
    if not shutil.which(DEBIAN_PYTHON):
        pytest.fail("Debian's python3 is missing")
    probe = subprocess.run([DEBIAN_PYTHON, "-c", "import dbm.gnu, dbm.ndbm"], capture_output=True)
    assert probe.returncode == 0, "python3-gdbm is in MACHINE_PACKAGES: run make machine-packages"


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("dbm.ndbm", "dbm.gnu"), ("dbm.gnu", "dbm.gnu"), ("dbm.dumb", "dbm.gnu"),
     ("dbm.gnu", "dbm.ndbm"), ("dbm.ndbm", "dbm.dumb")],
)  # fmt: skip
def test_the_state_is_copied_record_by_record_across_backends(
    tmp_path, debian_python, writer, reader
):
    result = copy_on_debian_python(tmp_path, writer, reader, COPY)
    assert result["records"] == 50
    assert result["back"] == {f"task-{i}": f"record-{i}" for i in range(50)}
    assert result["kind"] == reader
    assert not [f for f in result["left"] if ".takeover" in f or f.startswith("flower.db.")]
    assert set(result["modes"]) == {"0o600"}


def test_gdbm_pitfall_the_old_files_move_out_before_flowerbeds_state_is_looked_for(
    tmp_path, debian_python
):
    """gdbm's `flower.db` is the guide's --db itself; Berkeley DB names flowerbed's `flower`
    `flower.db` too: looked for before the old files move, the old one passes for flowerbed's."""
    early = """
        target = tmp + "/var/lib/flower/flower"
        print(json.dumps({"exists": bool(m.database_files(target))}))
    """
    assert copy_on_debian_python(tmp_path / "a", "dbm.gnu", "dbm.ndbm", early)["exists"]
    result = copy_on_debian_python(tmp_path / "b", "dbm.gnu", "dbm.ndbm", COPY)
    assert result["records"] == 50 and result["left"] == ["flower.db"]


def test_an_existing_state_is_never_overwritten(tmp_path, debian_python):
    steps = """
        backup = tmp + "/backup"
        [m.moved(p, backup) for p in m.database_files(old)]
        target = tmp + "/var/lib/flower/flower"
        with dbm.open(target, "n") as db:
            db[b"mine"] = b"flowerbed's"
        records, note = m.copied(backup + old, target, "root:root")
        with dbm.open(target, "r") as db:
            keys = [key.decode() for key in db.keys()]
        print(json.dumps({"records": records, "note": note, "keys": keys}))
    """
    result = copy_on_debian_python(tmp_path, "dbm.gnu", "dbm.gnu", steps)
    assert result["records"] == 0 and result["keys"] == ["mine"]
    assert "exists already" in result["note"]


def test_an_unreadable_state_is_a_note_not_a_crash(tmp_path, debian_python):
    steps = """
        with open(old + ".dir", "w") as index:
            index.write("'task-1', (0, 9)\\n{{{")
        missing = m.copied(old + "x", tmp + "/t", "root:root")
        print(json.dumps([m.copied(old, tmp + "/t", "root:root"), missing, os.listdir(tmp)]))
    """
    broken, missing, left = copy_on_debian_python(tmp_path, "dbm.dumb", "dbm.gnu", steps)
    assert broken[0] == 0 and "could not be read" in broken[1]
    assert missing == [0, "no state file was found"]
    assert "t" not in left and not [f for f in left if "takeover" in f]


TAKE = """
    unit_file = tmp + "/etc/systemd/system/flower-legacy.service"
    os.makedirs(os.path.dirname(unit_file))
    with open(unit_file, "w") as f:
        f.write("[Service]\\nExecStart=/opt/f/bin/celery flower --basic_auth=admin:s3cret\\n")
    argv = "/opt/f/bin/celery flower --basic_auth=admin:s3cret --db=" + old
    m.shown = lambda units: [{"Id": units[0], "LoadState": "loaded", "FragmentPath": unit_file,
                              "DropInPaths": "", "ExecStart": "{ argv[]=" + argv + " ; }"}]
    ran = []
    m.run = lambda *argv, check=False: ran.append(argv[:2]) or ""
    m.BACKUPS, m.LOCAL_DIRS = tmp + "/backups", (tmp + "/etc/",)
    os.makedirs(m.BACKUPS)
    user = __import__("pwd").getpwuid(os.getuid()).pw_name
    group = __import__("grp").getgrgid(os.getgid()).gr_name
    target = tmp + "/var/lib/flower/flower"
    report = m.take("flower-legacy.service", old, target, user + ":" + group, "20260101T000000Z")
    mode = lambda p: "df"[os.path.isfile(p)] + oct(os.stat(p).st_mode & 0o777)
    modes = {p[len(report["backup"]):] or "/": mode(p)
             for p in [report["backup"]] + [os.path.join(d, n) for d, ds, fs in
                                            os.walk(report["backup"]) for n in ds + fs]}
    print(json.dumps({**report, "ran": ran, "modes": modes,
                      "left": sorted(os.listdir(tmp + "/var/lib/flower"))}))
"""


def test_take_moves_the_old_files_out_before_it_copies(tmp_path, debian_python):
    """The gdbm pitfall on a whole takeover: the old gdbm `flower.db` would pass for
    flowerbed's Berkeley DB `flower` (`flower.db`) were it still there when the copy looks."""
    report = copy_on_debian_python(tmp_path, "dbm.gnu", "dbm.ndbm", TAKE)
    assert report["records"] == 50, report["note"]
    assert report["left"] == ["flower.db"]  # flowerbed's own, Berkeley DB's name for `flower`
    assert report["ran"][:2] == [["systemctl", "stop"], ["systemctl", "disable"]]
    assert report["backup"].endswith("/flowerbed-takeover-flower-legacy.service-20260101T000000Z")
    assert set(report["modes"].values()) == {"d0o700", "f0o600"}
    assert any(
        path.endswith("/etc/systemd/system/flower-legacy.service") for path in report["kept"]
    )
    assert "/README" in report["modes"]
