"""Issue 19: Flower's names decided from the host (flowerbed/ownership.py), on one fresh host.

The host gets what a careless choice of names would take over: the login account `admin` (with
its group), a hand-made `metrics.service` with a password in its ExecStart, `/opt/tools` and
`/var/lib/metrics` holding files. In order:
1. a deploy naming them is refused, all 5 in one message with the claims that would fix it;
   the unit's password is in no output at -vvv; the host is as it was (a snapshot);
2. with the defaults the record lists what was created; a second run changes nothing; with the
   record deleted, the next run writes it again as its one change;
3. `svcflower` (user and group, made by hand) is refused until claimed, then adopted (Flower
   runs as it), a second run changes nothing, and `metrics` is still refused;
4. remove.py deletes the user and group flowerbed created and keeps the adopted `svcflower`.
"""

from __future__ import annotations

import re
import secrets

import pytest
from conftest import Lab
from deploy_helpers import DeployResult, run_deploy
from test_remove import differences, snapshot

from flowerbed.ownership import RECORD

pytestmark = pytest.mark.lab

PASSWORD = f"Unit-pw-{secrets.token_hex(8)}"
HAND_MADE_UNIT = f"""[Unit]
Description=metrics exporter, made by hand
[Service]
ExecStart=/usr/bin/env METRICS_PASSWORD={PASSWORD} sleep infinity
[Install]
WantedBy=multi-user.target
"""
SETUP = f"""set -e
useradd --create-home --shell /bin/bash admin
mkdir -p /opt/tools /var/lib/metrics
echo 'echo tools' > /opt/tools/run.sh
echo 42 > /var/lib/metrics/data
cat > /etc/systemd/system/metrics.service <<'EOF'
{HAND_MADE_UNIT}EOF
systemctl daemon-reload
"""
TAKEN = {"flower_user": "admin", "flower_group": "admin", "flower_service": "metrics",
         "flower_install_dir": "/opt/tools"}  # fmt: skip
TAKEN_NAMED = (
    "user admin (flower_user)", "group admin (flower_group)",
    "unit metrics.service (flower_service)", "directory /opt/tools (flower_install_dir)",
    "directory /var/lib/metrics (flower_service)",
)  # fmt: skip
TAKEN_CLAIMS = (
    'flower_names_claimed = ["user:admin", "group:admin", "unit:metrics", "dir:/opt/tools", '
    '"dir:/var/lib/metrics"]'
)
CREATED = [
    "created dir:/etc/flower", "created dir:/opt/flower", "created dir:/run/flower",
    "created dir:/var/lib/flower", "created group:flower", "created unit:flower",
    "created user:flower",
]  # fmt: skip
SVC = {"flower_user": "svcflower", "flower_group": "svcflower"}
SVC_CLAIMED = {**SVC, "flower_names_claimed": ["user:svcflower", "group:svcflower"]}


@pytest.fixture(scope="module")
def host(lab: Lab, module_hosts) -> str:
    name = module_hosts(prefix="own")["name"]
    lab.ssh(name, SETUP, check=True)
    return name


def record(lab: Lab, name: str) -> list[str]:
    return lab.ssh(name, ["cat", RECORD], check=True).stdout.splitlines()


def refused(result: DeployResult, name: str) -> str:
    # the one host failed: pyinfra ends with "No hosts remaining" (and no --json document)
    assert not result.ok, result.explain()
    # pyinfra pads "[host]" to the inventory's longest name: one space alone, more in a lab
    # that holds other modules' hosts too (as in CI's shards)
    refusal = rf"\[{re.escape(name)}\]\s+flowerbed refuses names on this host"
    assert re.search(refusal, result.log), result.explain()
    return result.log


def test_names_it_did_not_create_are_refused_before_any_change(lab: Lab, host: str):
    before = snapshot(lab, host)
    result = run_deploy(host, TAKEN, flags=("-vvv", "-y", "--json"))
    log = refused(result, host)
    missing = [named for named in TAKEN_NAMED if named not in log]
    assert not missing, f"not named: {missing}\n{log[-4000:]}"
    assert TAKEN_CLAIMS in log, log[-4000:]
    # -vvv prints what the fact found (the unit file, as not flowerbed's), never its content
    assert "/etc/systemd/system/metrics.service\tfile\tno" in log, log[-4000:]
    assert PASSWORD not in result.stdout + result.stderr, "the hand-made unit's password leaked"
    assert "sleep infinity" not in result.stderr, "the hand-made unit was read past its first line"
    after = snapshot(lab, host)
    found = differences(lab, host, before, after)
    assert not found, "the refused deploy changed the host:\n" + "\n".join(found)
    print(f"refused in {result.seconds:.1f} s")


def test_the_record_lists_what_was_created_and_is_written_again(lab: Lab, host: str):
    first = run_deploy(host)
    assert first.ok, first.explain()
    assert record(lab, host) == CREATED
    mode = lab.ssh(host, ["stat", "-c", "%U:%G %a", RECORD], check=True).stdout.strip()
    assert mode == "root:root 644", mode
    second = run_deploy(host)
    assert second.ok and second.totals["success"] == 0, second.explain()

    lab.ssh(host, ["rm", RECORD], check=True)
    again = run_deploy(host)
    assert again.ok and again.totals["success"] == 1, again.explain()
    assert again.changed_hosts("Flower's names") == [host]
    assert record(lab, host) == CREATED
    print(f"deploy {first.seconds:.1f} s, no-op {second.seconds:.1f} s, record again "
          f"{again.seconds:.1f} s")  # fmt: skip


def test_a_claimed_account_is_adopted_and_the_rest_stays_refused(lab: Lab, host: str):
    lab.ssh(host, ["useradd", "--system", "--user-group", "svcflower"], check=True)
    log = refused(run_deploy(host, SVC), host)
    assert "user svcflower (flower_user)" in log and "group svcflower (flower_group)" in log
    assert 'flower_names_claimed = ["user:svcflower", "group:svcflower"]' in log, log[-3000:]

    adopted = run_deploy(host, SVC_CLAIMED)
    assert adopted.ok, adopted.explain()
    lines = record(lab, host)
    assert {"adopted user:svcflower", "adopted group:svcflower"} <= set(lines), lines
    runs_as = lab.ssh(host, "ps -o user= -p $(systemctl show -p MainPID --value flower)").stdout
    assert runs_as.strip() == "svcflower", runs_as
    again = run_deploy(host, SVC_CLAIMED)
    assert again.ok and again.totals["success"] == 0, again.explain()

    log = refused(run_deploy(host, {**SVC_CLAIMED, "flower_service": "metrics"}), host)
    assert "unit metrics.service (flower_service)" in log
    assert "svcflower" not in log.split("flowerbed refuses names")[1].split("Fix:")[0]


def test_remove_deletes_what_was_created_and_keeps_what_was_adopted(lab: Lab, host: str):
    removed = run_deploy(host, SVC_CLAIMED, deploy_file="remove.py")
    assert removed.ok, removed.explain()
    accounts = lab.ssh(host, "getent passwd flower svcflower admin; getent group flower svcflower")
    names = {line.split(":")[0] + ("/group" if line.count(":") == 3 else "")
             for line in accounts.stdout.splitlines()}  # fmt: skip
    assert names == {"svcflower", "admin", "svcflower/group"}, accounts.stdout
    unit = lab.ssh(host, ["test", "-e", "/etc/systemd/system/flower.service"])
    assert unit.returncode != 0, "flowerbed's unit (created) is left"
    hand_made = lab.ssh(host, ["grep", "-c", PASSWORD, "/etc/systemd/system/metrics.service"])
    assert hand_made.stdout.strip() == "1", "the hand-made unit was touched"
