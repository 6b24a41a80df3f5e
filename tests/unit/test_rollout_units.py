"""The rollout driver (flowerbed/rollout.py) without a lab: its batches, its arguments, its
knobs, what it makes of pyinfra's results and the report it prints."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from settings_helpers import error_for, settings_with

from flowerbed import rollout
from flowerbed.flower import APP_CHECK, app_check
from flowerbed.rollout import (
    BatchResult,
    FleetHost,
    Invocation,
    Report,
    RolloutError,
    batch_result,
    batches,
    fleet,
    knobs,
    main,
    parsed,
)

REPO = Path(__file__).resolve().parents[2]
SIX = ["w1", "w2", "w3", "w4", "w5", "w6"]


# --- batches --------------------------------------------------------------------------------


def test_the_canary_goes_first_and_alone_then_batches_in_inventory_order():
    assert batches(SIX, 2) == [["w1"], ["w2", "w3"], ["w4", "w5"], ["w6"]]
    assert batches(SIX, 2, canary="w4") == [["w4"], ["w1", "w2"], ["w3", "w5"], ["w6"]]
    assert batches(SIX, 10) == [["w1"], ["w2", "w3", "w4", "w5", "w6"]]
    assert batches(["w1"], 3) == [["w1"]]
    assert batches([], 3) == []


@given(
    names=st.lists(st.text("abcxyz0123", min_size=1, max_size=4), unique=True, max_size=30),
    batch=st.integers(1, 12),
    pick=st.integers(0, 40),
)
def test_every_host_is_in_exactly_one_batch_none_larger_than_asked(names, batch, pick):
    canary = names[pick % len(names)] if names and pick < 30 else ""
    planned = batches(names, batch, canary)
    flat = [name for group in planned for name in group]
    assert sorted(flat) == sorted(names)
    if names:
        assert planned[0] == [canary or names[0]]
        assert all(1 <= len(group) <= batch for group in planned[1:])
        rest = [n for n in names if n != planned[0][0]]
        assert flat[1:] == rest, "inventory order is kept after the canary"


# --- arguments ------------------------------------------------------------------------------


def test_pyinfra_options_pass_through_as_given_and_limit_is_taken_out():
    got = parsed(
        ["inv.py", "deploy.py", "-y", "--data", "flower_version=2.1.0", "--limit", "web,w9",
         "--limit=db", "--exclude", "w2", "-v", "--parallel", "4"]
    )  # fmt: skip
    assert got == Invocation(
        "inv.py", "deploy.py", ("--data", "flower_version=2.1.0", "-v", "--parallel", "4"),
        limits=("web", "w9", "db"), excludes=("w2",),
    )  # fmt: skip


def test_the_deploy_is_a_file_or_a_function_pyinfra_runs_by_name():
    assert parsed(["inv.py", "flowerbed.runs.deploy"]).deploy == "flowerbed.runs.deploy"
    assert parsed(["inv.py", "deploys/web.py"]).deploy == "deploys/web.py"


@pytest.mark.parametrize("option", ["--serial", "--no-wait", "--dry", "--json", "--fail-percent"])
def test_options_that_would_undo_the_batches_are_refused(option):
    with pytest.raises(RolloutError, match=f"^{option} is not for a rollout: "):
        parsed(["inv.py", "deploy.py", option])


@pytest.mark.parametrize("option", ["--ssh-password", "--password=hunter2-secret"])
def test_a_password_option_is_refused_without_repeating_it(option):
    with pytest.raises(RolloutError) as refused:
        parsed(["inv.py", "deploy.py", option, "hunter2-secret"])
    assert "readable by every user" in str(refused.value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "argv", [[], ["inv.py"], ["--limit", "x", "deploy.py"], ["inv.py", "deploy"]]
)
def test_without_an_inventory_and_a_deploy_the_usage_is_shown(argv):
    with pytest.raises(RolloutError, match="usage: python -m flowerbed.rollout"):
        parsed(argv)


def test_limit_and_exclude_match_names_groups_and_globs():
    listed = json.dumps(
        [{"name": n, "groups": ["web" if n < "w4" else "db", "prod"], "data": {}} for n in SIX]
    )
    assert [h.name for h in fleet(listed)] == SIX
    assert [h.name for h in fleet(listed, ["db"])] == ["w4", "w5", "w6"]
    assert [h.name for h in fleet(listed, ["w[12]", "w6"])] == ["w1", "w2", "w6"]
    assert [h.name for h in fleet(listed, ["prod"], ["web"])] == ["w4", "w5", "w6"]
    with pytest.raises(RolloutError, match="leave no host"):
        fleet(listed, ["nowhere"])


# --- the knobs ------------------------------------------------------------------------------


def hosts(*data: dict) -> list[FleetHost]:
    return [FleetHost(f"w{i}", ("prod",), d) for i, d in enumerate(data, start=1)]


def test_the_knobs_default_to_one_host_at_a_time_after_the_first():
    assert (knobs(hosts({}, {})).batch, knobs(hosts({}, {})).canary) == (1, "")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"flower_rollout_batch": 0}, "flower_rollout_batch: 0 is below 1"),
        ({"flower_rollout_batch": "2"}, "flower_rollout_batch: expected an integer"),
        ({"flower_rollout_batch": True}, "flower_rollout_batch: expected an integer"),
        ({"flower_rollout_canary": "w1; rm"}, "flower_rollout_canary: 'w1; rm' is not"),
        ({"flower_rollout_canary": 3}, "flower_rollout_canary: expected"),
        ({"flower_rollout_batches": 2}, "flower_rollout_batches: unknown key"),
    ],
)
def test_a_bad_knob_is_refused_naming_the_host_and_the_key(data, message):
    with pytest.raises(RolloutError, match=f"^host w1: {message}"):
        knobs(hosts(data))


def test_a_canary_outside_the_rollout_is_refused_naming_the_hosts():
    with pytest.raises(RolloutError, match="'w9' is not a host of this rollout.*w1, w2"):
        knobs(hosts({"flower_rollout_canary": "w9"}, {"flower_rollout_canary": "w9"}))


def test_hosts_that_disagree_on_the_batch_are_refused():
    with pytest.raises(RolloutError, match="differ between hosts.*batch 3.*for w2.*set them once"):
        knobs(hosts({}, {"flower_rollout_batch": 3}))


def test_the_deploy_validates_the_knobs_with_every_other_key():
    assert error_for(flower_rollout_batch=-1).startswith("flower_rollout_batch: -1 is below 1")
    assert "flower_rollout_canary" in error_for(flower_rollout_canary="not a name")


# --- pyinfra's results and the report -------------------------------------------------------


def results(changed: dict[str, list[str]], failed: list[str]) -> str:
    operations = [{"name": name, "success": hosts, "error": []} for name, hosts in changed.items()]
    return json.dumps({"plan": [], "results": {"operations": operations, "failed_hosts": failed}})


def test_a_batch_result_says_who_changed_and_who_failed():
    stdout = results({"Restart Flower": ["w2"], "nginx": ["w2", "w3"]}, failed=["w3"])
    assert batch_result(["w2", "w3", "w4"], 1, stdout) == BatchResult(
        ("w2", "w3", "w4"), ok=False, changed=("w2", "w3"), failed=("w3",)
    )
    assert batch_result(["w2"], 0, results({"x": []}, [])).ok


def test_a_batch_without_results_failed_every_host_of_it():
    # pyinfra prints no results when every host of its run failed ("No hosts remaining!")
    got = batch_result(["w1"], 1, "")
    assert (got.ok, got.failed, got.known) == (False, ("w1",), False)


def test_the_report_of_a_rollout_stopped_at_the_canary_names_every_host():
    report = Report(batches(SIX, 2))
    report.results.append(batch_result(["w1"], 1, ""))
    text = report.text()
    assert not report.ok
    assert text.splitlines() == [
        "rollout STOPPED at the canary: a host failed the deploy or its health check",
        "  changed (0): -",
        "  failed (1): w1 (no results from pyinfra: they may have changed)",
        "  unchanged (0): -",
        "  left alone (5): w2, w3, w4, w5, w6",
    ]


def test_the_report_of_a_finished_rollout():
    report = Report([["w1"], ["w2", "w3"]])
    report.results += [
        batch_result(["w1"], 0, results({"Restart Flower": ["w1"]}, [])),
        batch_result(["w2", "w3"], 0, results({"Restart Flower": ["w3"]}, [])),
    ]
    assert report.ok
    assert report.hosts() == {
        "changed": ["w1", "w3"], "failed": [], "unchanged": ["w2"], "left alone": []
    }  # fmt: skip
    assert report.text().startswith("rollout done: 2 batch(es)")


# --- the driver, with pyinfra's runs recorded -----------------------------------------------


class Pyinfra:
    """Stands in for pyinfra's runs: debug-inventory lists SIX, each host in `failing` fails."""

    def __init__(self, failing: set[str] = frozenset(), data: dict | None = None):
        self.failing, self.data, self.runs = failing, data or {}, []

    def __call__(self, args: list[str], capture: bool) -> subprocess.CompletedProcess:
        self.runs.append(args)
        if "debug-inventory" in args:
            listed = [{"name": n, "groups": ["prod"], "data": self.data} for n in SIX]
            return subprocess.CompletedProcess(args, 0, json.dumps(listed))
        batch = [args[i + 1] for i, a in enumerate(args) if a == "--limit"]
        failed = [h for h in batch if h in self.failing and "--dry" not in args]
        out = "" if failed == batch else results({"Restart Flower": batch}, failed)
        return subprocess.CompletedProcess(args, 1 if failed else 0, out if capture else None)


def test_a_failing_canary_stops_the_rollout_before_any_other_host_runs(capsys):
    pyinfra = Pyinfra(failing={"w3"}, data={"flower_rollout_canary": "w3"})
    argv = ["inv.py", "deploy.py", "--data", "flower_rollout_canary=w3", "--limit", "prod"]
    assert main(argv, pyinfra) == 1
    listing, dry, canary = pyinfra.runs
    assert listing == ["inv.py", "debug-inventory", "--json", "--data", "flower_rollout_canary=w3"]
    assert dry[:3] == ["inv.py", "deploy.py", "-y"] and "--dry" in dry
    assert sorted(dry[i + 1] for i, a in enumerate(dry) if a == "--limit") == SIX
    assert canary == ["inv.py", "deploy.py", "-y", "--data", "flower_rollout_canary=w3",
                      "--json", "--limit", "w3"]  # fmt: skip
    out = capsys.readouterr()
    assert "left alone (5): w1, w2, w4, w5, w6" in out.out
    assert "rollout: the canary: w3" in out.err


def test_a_failing_batch_stops_the_next_and_keeps_what_the_batches_before_did(capsys):
    pyinfra = Pyinfra(failing={"w4"}, data={"flower_rollout_batch": 2})
    assert main(["inv.py", "deploy.py"], pyinfra) == 1
    assert [r[-1] for r in pyinfra.runs[2:]] == ["w1", "w3", "w5"]  # the last --limit of each
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rollout STOPPED at batch 3 of 4")
    assert lines[1:] == [
        "  changed (4): w1, w2, w3, w5", "  failed (1): w4", "  unchanged (0): -",
        "  left alone (1): w6",
    ]  # fmt: skip


def test_a_failed_dry_run_changes_no_host(capsys):
    pyinfra = Pyinfra()
    pyinfra_dry_fails = lambda args, capture: (  # noqa: E731
        subprocess.CompletedProcess(args, 1, "") if "--dry" in args else pyinfra(args, capture)
    )
    assert main(["inv.py", "deploy.py"], pyinfra_dry_fails) == 1
    assert not any("--json" in run and "--limit" in run for run in pyinfra.runs)
    assert "no host was changed" in capsys.readouterr().out


def test_bad_knobs_run_nothing_and_exit_2(capsys):
    pyinfra = Pyinfra(data={"flower_rollout_batch": 0})
    assert main(["inv.py", "deploy.py"], pyinfra) == 2
    assert len(pyinfra.runs) == 1, "only the inventory was listed"
    assert "flower_rollout_batch: 0 is below 1" in capsys.readouterr().err


def test_the_inventory_is_resolved_by_pyinfra_itself_group_data_and_data_included(tmp_path):
    inventory = tmp_path / "fleet.py"
    inventory.write_text('web = ["a1", ("a2", {"flower_rollout_canary": "a3"})]\ndb = ["a3"]\n')
    (tmp_path / "group_data").mkdir()
    (tmp_path / "group_data" / "all.py").write_text('flower_rollout_canary = "a3"\n')
    invocation = parsed([str(inventory), "deploy.py", "--data", "flower_rollout_batch=2"])
    assert rollout.plan(invocation) == [["a3"], ["a1", "a2"]]


def test_pyinfra_gets_the_environment_unchanged_and_no_secret_reaches_argv_or_output(
    monkeypatch, capfd
):
    secret = "broker-password-0d9e7"
    monkeypatch.setenv("FLOWERBED_BROKER_URL", f"redis://:{secret}@broker:6379/0")
    # a stand-in for pyinfra that reports a digest of the variable it was given, and its argv
    probe = (
        "import hashlib, json, os, sys; print(json.dumps({'argv': sys.argv, 'digest': "
        "hashlib.sha256(os.environ['FLOWERBED_BROKER_URL'].encode()).hexdigest()}))"
    )
    monkeypatch.setattr(rollout, "PYINFRA", (sys.executable, "-c", probe))
    done = rollout.run_pyinfra(["inv.py", "deploy.py", "-y"], capture=True)
    seen = json.loads(done.stdout)
    url = f"redis://:{secret}@broker:6379/0"
    assert seen["digest"] == hashlib.sha256(url.encode()).hexdigest()
    assert not any(secret in arg for arg in seen["argv"])
    assert secret not in "".join(capfd.readouterr())


# --- a Flower restart's app check: a canary that cannot load its app keeps serving ----------


def load_app(app: str, cwd: Path) -> subprocess.CompletedProcess:
    """flowerbed's app check (APP_CHECK), run by this venv's Python, which has Celery."""
    return subprocess.run(
        [sys.executable, "-c", APP_CHECK, app], cwd=cwd, capture_output=True, text=True
    )


def test_the_app_check_loads_an_app_from_the_working_directory_as_celery_does(tmp_path):
    (tmp_path / "proj.py").write_text("from celery import Celery\napp = Celery('proj')\n")
    assert load_app("proj:app", tmp_path).returncode == 0
    assert load_app("proj", tmp_path).returncode == 0  # celery finds `app` in the module


def test_an_app_that_cannot_be_imported_fails_the_check_naming_the_module(tmp_path):
    done = load_app("proj.no_such_app:app", tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "the Celery app proj.no_such_app:app cannot be loaded: ModuleNotFoundError proj"
    )


def test_the_app_check_never_prints_the_apps_own_message(tmp_path):
    secret = "redis://:hunter2-broker-pw@broker:6379/0"
    (tmp_path / "proj.py").write_text(f"raise ValueError('bad broker {secret}')\n")
    done = load_app("proj:app", tmp_path)
    assert done.returncode == 1 and "ValueError" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_the_app_check_runs_as_flowers_unit_would_and_only_with_an_app():
    app = {"flower_app": "proj.celery:app", "flower_app_source": "proj==1.0"}
    flower = settings_with(**app, flower_app_workdir="/srv/proj").flower
    argv = app_check(flower, "basic")
    assert argv[:5] == ("systemd-run", "--wait", "--pipe", "--quiet", "--collect")
    assert {"--uid=flower", "--gid=flower", "--property=WorkingDirectory=-/srv/proj"} <= set(argv)
    assert "--property=EnvironmentFile=-/etc/flower/flower.env" in argv
    assert argv[-4:] == ("/opt/flower/venv/bin/python", "-c", APP_CHECK, "proj.celery:app")
    assert app_check(settings_with().flower, "basic") == ()


@pytest.mark.parametrize(("command", "code", "first_line"), [
    ("true", 0, "rollout done: 1 batch(es)"),
    ("false", 1, "rollout STOPPED at the canary"),
])  # fmt: skip
def test_a_rollout_drives_the_real_pyinfra_on_this_machine(tmp_path, command, code, first_line):
    """The arguments as the real pyinfra takes them: debug-inventory, the dry run, a batch
    with --json and --limit, on `@local` (a command that changes nothing on this machine)."""
    (tmp_path / "inventory.py").write_text('hosts = ["@local"]\n')
    (tmp_path / "step.py").write_text(
        "from pyinfra.operations import server\n"
        f"server.shell(name='the step', commands=[{command!r}])\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "flowerbed.rollout", "inventory.py", "step.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYINFRA_PROGRESS": "off"},
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(first_line)
    heading = "changed" if code == 0 else "failed"
    assert any(line.startswith(f"  {heading} (1): @local") for line in lines[1:]), lines
    assert "rollout: the canary: @local" in done.stderr
