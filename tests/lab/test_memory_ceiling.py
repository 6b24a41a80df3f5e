"""The memory ceiling (issue 21, part 3) on a fresh host: a ceiling set far too low is hit by a
flood of task events, the kernel kills Flower, systemd restarts it (Restart=on-failure after
Result=oom-kill), the restarted Flower loads the state saved before, and verify.py's memory
layer reports the kill; the derived default stays above the same kind of flood (first: the
kill stays in the journal, where the memory layer finds it for a day).

The events go straight to the lab's Redis, at a database of this module's own (the shared
hosts' Flowers never see them), sent with Celery's own dispatcher as benchmarks/flood.py does.
Alone in tests/run_suite.py: the floods load the lab's one Redis and its cores.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import Celery
from conftest import Lab
from deploy_helpers import run_deploy
from lab_worker import flower_api
from test_rabbitmq import wait_for

from flowerbed.memory import derived_max_mib
from flowerbed.verify import MEMORY_SHARE_MAX

pytestmark = pytest.mark.lab

DATABASE = 8  # the lab's hosts use 0, benchmarks/flood.py 7
MAX_TASKS = 20_000
TOO_LOW_MIB = 96  # an idle Flower holds 59 MiB; ~8,000 flood tasks take it past this
SAVE_MS = 30_000  # the flood's kill comes well within one save interval
BEFORE = "flowerbed_mem.before"
FLOOD = "flowerbed_mem.flood"
UNIT = "flower.service"
KILLED = "Failed with result 'oom-kill'"


def own_database(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{DATABASE}"))


def send_tasks(broker: str, name: str, count: int, rate: int) -> None:
    """The events a worker sends for `count` tasks (received, started, succeeded), paced."""
    app = Celery(broker=broker)
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, hostname="mem@labmachine", enabled=True)
        dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)
        started = time.monotonic()
        for sent in range(count):
            task_id = str(uuid.uuid4())
            dispatcher.send(
                "task-received", uuid=task_id, name=name, args="()", kwargs="{}", retries=0,
                eta=None, expires=None, root_id=task_id, parent_id=None,
            )  # fmt: skip
            dispatcher.send("task-started", uuid=task_id)
            dispatcher.send("task-succeeded", uuid=task_id, result="None", runtime=0.001)
            ahead = (sent + 1) / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def show(lab: Lab, name: str) -> dict[str, str]:
    props = "MemoryCurrent,MemoryMax,NRestarts,ActiveState,Result"
    out = lab.ssh(name, ["systemctl", "show", UNIT, f"--property={props}"], check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def kills_since(lab: Lab, name: str, since: int) -> int:
    journal = f"journalctl -u {UNIT} --since=@{since} -o cat --no-pager"
    return int(lab.ssh(name, f'{journal} | grep -cF "{KILLED}" || true').stdout.strip() or 0)


def host_now(lab: Lab, name: str) -> int:
    return int(lab.ssh(name, "date +%s", check=True).stdout)


def saved_at(lab: Lab, name: str) -> int:
    """When Flower last wrote its state file (0: never)."""
    newest = "ls -t /var/lib/flower/flower /var/lib/flower/flower.* 2>/dev/null | head -n 1"
    out = lab.ssh(name, f'f=$({newest}); [ -z "$f" ] && echo 0 || stat -c %Y "$f"').stdout
    return int(out.strip() or 0)


def tasks_named(lab: Lab, name: str, task: str) -> set[str]:
    return set(flower_api(lab, name, f"/api/tasks?taskname={task}&limit=100000"))


def memory_layer(lab: Lab, name: str, data: dict, env: dict, tmp_path: Path) -> dict:
    summary = tmp_path / "verify.json"
    summary.unlink(missing_ok=True)
    result = run_deploy(
        [name], {**data, "flower_verify_summary_file": str(summary)}, flags=("-y",),
        env=env, deploy_file="verify.py",
    )  # fmt: skip
    assert summary.exists(), result.explain()
    return json.loads(summary.read_text())["hosts"][name]["layers"]["memory"]


@pytest.fixture(scope="module")
def host(lab: Lab, module_hosts) -> dict:
    found = module_hosts(prefix="mem")
    broker = own_database(lab.secrets["FLOWERBED_BROKER_URL"])
    return {**found, "broker": broker, "env": {"FLOWERBED_BROKER_URL": broker}}


def data(**more) -> dict:
    return {"flower_max_tasks": MAX_TASKS, "flower_healthcheck_min_workers": 0,
            "flower_state_save_interval": SAVE_MS, **more}  # fmt: skip


def test_the_derived_ceiling_stays_above_a_flood(lab: Lab, host: dict, tmp_path: Path):
    name, settings = host["name"], data(flower_memory_max=0)
    deployed = run_deploy([name], settings, env=host["env"])
    assert deployed.ok, deployed.explain()
    ceiling = derived_max_mib(MAX_TASKS) * 2**20  # 470 MiB
    assert show(lab, name)["MemoryMax"] == str(ceiling)
    started, restarts = host_now(lab, name), int(show(lab, name)["NRestarts"])
    send_tasks(host["broker"], FLOOD, 60_000, rate=1000)  # three times max_tasks, a minute
    time.sleep(10)  # Flower drains what it has not handled yet
    state = show(lab, name)
    assert state["ActiveState"] == "active" and int(state["NRestarts"]) == restarts
    assert kills_since(lab, name, started) == 0
    used = int(state["MemoryCurrent"])
    assert used < MEMORY_SHARE_MAX * ceiling, f"{used / 2**20:.0f} of {ceiling / 2**20:.0f} MiB"
    layer = memory_layer(lab, name, settings, host["env"], tmp_path)
    assert layer["ok"], layer


def test_a_ceiling_far_too_low_restarts_flower_with_its_saved_state(
    lab: Lab, host: dict, tmp_path: Path
):
    name, settings = host["name"], data(flower_memory_max=TOO_LOW_MIB)
    # the default's flood is saved: a Flower that loads it would start above this ceiling
    lab.ssh(name, f"systemctl stop {UNIT}; rm -f /var/lib/flower/flower*", check=True)
    deployed = run_deploy([name], settings, env=host["env"])
    assert deployed.ok, deployed.explain()
    assert show(lab, name)["MemoryMax"] == str(TOO_LOW_MIB * 2**20)
    send_tasks(host["broker"], BEFORE, 200, rate=500)
    before = wait_for(lambda: len(t := tasks_named(lab, name, BEFORE)) == 200 and t, 60,
                      "Flower lists the 200 tasks sent before the flood")  # fmt: skip
    # the flood starts right after a save that holds them: Flower dies before the next one
    listed_at = host_now(lab, name)
    wait_for(lambda: saved_at(lab, name) > listed_at, SAVE_MS / 1000 + 15, "a periodic save")
    started, restarts = host_now(lab, name), int(show(lab, name)["NRestarts"])
    send_tasks(host["broker"], FLOOD, 20_000, rate=3000)
    wait_for(lambda: kills_since(lab, name, started), 90, f"`{KILLED}` in Flower's journal")
    wait_for(lambda: int(show(lab, name)["NRestarts"]) > restarts, 60, "systemd restarts Flower")
    wait_for(lambda: show(lab, name)["ActiveState"] == "active", 60, "Flower active again")
    assert kills_since(lab, name, started) == 1, "one kill: the restarted Flower stays up"
    after = wait_for(lambda: tasks_named(lab, name, BEFORE), 60, "the restarted Flower answers")
    assert after == before, "the state saved before the kill is loaded"
    layer = memory_layer(lab, name, settings, host["env"], tmp_path)
    assert not layer["ok"] and layer["value"] == "oom-kill x1", layer
    assert f"killed Flower at its {TOO_LOW_MIB} MiB ceiling 1 time(s)" in layer["problem"]
