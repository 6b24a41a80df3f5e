"""`make test`: the unit tests, then the lab's modules in shards side by side, then what must
run alone. Exits non-zero if any part failed; each shard's output is printed whole when it ends.

A lab test that fails is run once more in a new session (its module's fixtures set up again),
after every shard has ended: on 2 cores with five shards side by side, a test meets timing it
never meets alone. A test that passes on that second run is named under "flaky" in the summary,
with its first failure's log kept, and does not fail the suite; one that fails twice does, and so
does a session that crashed or was interrupted, a collection error and a teardown error.

The lab is brought up once, before the shards (FLOWERBED_LAB_UP=1 then tells each session's
`lab` fixture to use it as it is: sessions never bring it up or rebuild it under each other).
A shard holds whole modules: "shared" those on the shared hosts h1..h3, the others those that
boot fresh hosts of their own. Modules that take the lab's shared worker or broker away for a
while (their deploys would fail the health check of a module beside them) and the lifecycle
tests (they take the whole lab down) run alone, after the shards.

    .venv/bin/python tests/run_suite.py [PYTEST_ARGS...]   # what `make test` runs
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from subprocess import Popen

REPO = Path(__file__).resolve().parent.parent
LAB = "tests/lab"
TESTS_FAILED = 1  # pytest's exit code when tests ran and some failed (pytest.ExitCode)
# Side by side, each shard in turn. Shard "shared" uses h1..h3; the others boot fresh hosts.
SHARDS = {
    "shared": [
        "test_claims.py", "test_browser.py", "test_flower.py", "test_firewall.py",
        "test_preflight.py", "test_preview.py", "test_secret_output.py", "test_doc_commands.py",
    ],
    "fresh-a": [
        "test_beside_services.py", "test_beside_sites.py", "test_own_firewall.py",
        "test_consumer.py", "test_egress.py", "test_firewall_edges.py", "test_sudo.py",
        "test_oauth.py",
    ],
    # (faults: its own broker and worker; rollout: six hosts of its own)
    "fresh-c": ["test_faults.py", "test_rabbitmq.py", "test_rollout.py"],
    "fresh-b": [
        "test_leak_scan.py", "test_remove.py", "test_beside_docker.py", "test_cookie_rotation.py",
        "test_login_ban.py", "test_edge.py", "test_inside_site.py",
    ],
    # issue 21: several Flowers on one fresh host (a worker of its own on Redis db 11), the
    # takeover of a hand-made Flower, the memory ceiling; issue 19: Flower's names decided from
    # the host; issue 20: the README's Steps, a fresh machine. Each on fresh hosts of its own.
    "fresh-d": [
        "test_instances.py", "test_takeover.py", "test_names_from_host.py",
        "test_memory_ceiling.py", "test_readme_steps.py",
        # issue 20: a fresh machine (make test-unit, the OIDC provider on Debian's Node.js), last
        # in the shard that ends first rather than a sixth shard (a whole unit suite and Debian's
        # npm are CPU on the same 2 cores)
        "test_fresh_machine.py",
    ],
}  # fmt: skip
# Alone, after the shards: they stop the shared worker or broker, flood it, rotate the lab's own
# logins (.lab/lab.env, which every deploy reads), deploy every lab host (`make demo`), or take
# the lab down.
ALONE = [
    "test_rotate.py", "test_verify.py", "test_alerts.py", "test_alert_delivery.py",
    "test_demo.py", "test_lab.py", "test_lab_handover.py",
]  # fmt: skip


def pytest(*args: str, env: dict | None = None, log: Path | None = None) -> Popen:
    argv = [str(REPO / ".venv" / "bin" / "pytest"), *args]
    out = log.open("w") if log else None
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def failed_tests(report: Path, root: Path = REPO) -> list[str]:
    """The node ids of the tests that failed or errored, from pytest's JUnit XML report."""
    if not report.exists():
        return []
    ids = []
    for case in ET.parse(report).iter("testcase"):
        if case.find("failure") is None and case.find("error") is None:
            continue
        error = case.find("error")
        if error is not None and error.get("message", "").startswith("failed on teardown"):
            return []  # what the module's passed tests left behind: never run away
        parts = case.get("classname", "").split(".")
        for cut in range(len(parts), 0, -1):  # the module, then any class inside it
            module = "/".join(parts[:cut]) + ".py"
            if (root / module).exists():
                ids.append("::".join([module, *parts[cut:], case.get("name", "")]))
                break
    return list(dict.fromkeys(ids))


def run_lab(name: str, tests: list[str], extra: list[str], env: dict, logs: Path) -> Popen:
    report = logs / f"{name}.xml"
    report.unlink(missing_ok=True)  # a session that dies writes none: never an earlier one's
    return pytest(*tests, *extra, f"--junitxml={report}", env=env, log=logs / f"{name}.log")


def shown(name: str, code: int, logs: Path) -> int:
    print(f"\n===== {name if name == 'alone' else f'shard {name}'}: exit {code} =====")
    print((logs / f"{name}.log").read_text())
    return code


def passed_or_flaky(
    name: str, code: int, extra: list[str], env: dict, logs: Path, flaky: list, lab_up=None
) -> bool:
    """Whether the lab tests of `name` passed, its failed tests run once more in a session of
    their own. Only failed tests are: an interrupted or crashed session (any other exit code),
    a collection error or a module's teardown error fails at once."""
    if code == 0:
        return True
    again = failed_tests(logs / f"{name}.xml") if code == TESTS_FAILED else []
    if not again:
        return False
    print(f"\n===== {name}: running again on their own: {' '.join(again)} =====", flush=True)
    if lab_up and subprocess.run(lab_up, cwd=REPO).returncode:
        return False
    if shown(f"{name}-again", run_lab(f"{name}-again", again, extra, env, logs).wait(), logs):
        return False
    flaky.extend(again)
    return True


def every_lab_module_placed() -> list[str]:
    placed = {m for shard in SHARDS.values() for m in shard} | set(ALONE)
    found = {p.name for p in (REPO / LAB).glob("test_*.py")}
    return sorted(found - placed)


def main(extra: list[str]) -> int:
    if missing := every_lab_module_placed():
        print(f"tests/run_suite.py places no shard for {missing}: add each to SHARDS or ALONE")
        return 2
    started = time.monotonic()
    failed = []
    if pytest("-m", "not lab", *extra).wait():
        failed.append("unit")
    lab_up = [str(REPO / ".venv" / "bin" / "python"), "-c",
              "import sys; sys.path[:0] = ['tests', 'lab']; import conftest; "
              "conftest.lab_up(conftest.LAB_HOSTS)"]  # fmt: skip
    if subprocess.run(lab_up, cwd=REPO).returncode:
        print("the lab did not come up")
        return 1
    env = {**os.environ, "FLOWERBED_LAB_UP": "1"}
    # outside .lab: the lifecycle tests of the alone phase take the lab down, .lab with it
    logs = Path(tempfile.mkdtemp(prefix="flowerbed-suite-"))
    print(f"the lab's logs and reports: {logs}", flush=True)
    flaky: list[str] = []
    running = {
        name: run_lab(name, [f"{LAB}/{m}" for m in modules], extra, env, logs)
        for name, modules in SHARDS.items()
    }
    codes = {name: shown(name, process.wait(), logs) for name, process in running.items()}
    # reruns once every shard has ended: on their own, not beside the load that failed them
    for name, code in codes.items():
        if not passed_or_flaky(name, code, extra, env, logs, flaky):
            failed.append(name)
    alone = shown(
        "alone", run_lab("alone", [f"{LAB}/{m}" for m in ALONE], extra, env, logs).wait(), logs
    )
    # the lifecycle tests end with the lab taken down and up again: make sure, before a rerun
    if not passed_or_flaky("alone", alone, extra, env, logs, flaky, lab_up=lab_up):
        failed.append("alone")
    if flaky:
        print("\nflaky (failed once, passed on their own):\n  " + "\n  ".join(flaky))
    minutes = (time.monotonic() - started) / 60
    print(f"\nsuite: {minutes:.1f} min; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
