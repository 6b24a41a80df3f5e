"""Run the real deploy against lab hosts and read its results (reusable by every lab test).

result = run_deploy(["h1", "h2"], data={"flower_max_tasks": 5000})
assert result.ok and result.totals["success"] == 0      # a no-op run
assert result.changed_hosts("Restart Flower") == ["h2"]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYINFRA = str(REPO / ".venv" / "bin" / "pyinfra")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class DeployResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def log(self) -> str:
        """pyinfra's log (stderr) without colours."""
        return ANSI.sub("", self.stderr)

    @property
    def report(self) -> dict:
        """pyinfra's --json document: {"plan": [...], "results": {...} | None}."""
        return json.loads(self.stdout)

    @property
    def totals(self) -> dict:
        """{"hosts", "success" (changed), "no_change", "error"}, summed over operations."""
        return self.report["results"]["totals"]

    @property
    def failed_hosts(self) -> list[str]:
        return self.report["results"]["failed_hosts"]

    def failed_operations(self, host: str) -> list[str]:
        """The operations `host` failed, in order: the one that failed, then every one it never
        ran (pyinfra's --json lists a failed host's skipped operations as errors too)."""
        operations = self.report["results"]["operations"]
        return [op["name"] for op in operations if host in op["error"]]

    def changed_hosts(self, operation: str) -> list[str]:
        """Hosts where an operation whose name contains `operation` made a change.

        No operation by that name is an error, never `[]`: a renamed or skipped operation
        would otherwise pass every "nothing changed" check."""
        operations = self.report["results"]["operations"]
        matching = [op for op in operations if operation in op["name"]]
        if not matching:
            names = "\n  ".join(sorted({op["name"] for op in operations}))
            raise AssertionError(
                f"no operation named like {operation!r} ran; they were:\n  {names}"
            )
        return sorted({host for op in matching for host in op["success"]})

    def explain(self) -> str:
        return f"$ {' '.join(self.args)}\nexit {self.returncode}\n{self.stderr[-6000:]}"


def data_args(data: dict | None) -> list[str]:
    args = []
    for key, value in (data or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        args += ["--data", f"{key}={text}"]
    return args


def deploy_args(
    hosts: list[str] | str,
    data: dict | None = None,
    flags: tuple[str, ...] = ("-y", "--json"),
    inventory: str = "inventory/lab.py",
    deploy_file: str = "deploy.py",
) -> list[str]:
    """The pyinfra command line run_deploy runs (also timed by benchmarks/converge.py)."""
    names = [hosts] if isinstance(hosts, str) else list(hosts)
    assert names, "name the hosts: without --limit pyinfra targets every host in the lab"
    limits = [arg for name in names for arg in ("--limit", name)]
    return [PYINFRA, inventory, deploy_file, *flags, *limits, *data_args(data)]


def deploy_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYINFRA_PROGRESS": "off", **(env or {})}


def run_deploy(
    hosts: list[str] | str,
    data: dict | None = None,
    *,
    flags: tuple[str, ...] = ("-y", "--json"),
    env: dict[str, str] | None = None,
    inventory: str = "inventory/lab.py",
    deploy_file: str = "deploy.py",
    timeout: float = 1200,
) -> DeployResult:
    """`pyinfra INVENTORY deploy.py -y --json --limit HOSTS [--data k=v ...]` from the repo."""
    args = deploy_args(hosts, data, flags, inventory, deploy_file)
    started = time.monotonic()
    completed = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=deploy_env(env)
    )
    return DeployResult(
        args, completed.returncode, completed.stdout, completed.stderr, time.monotonic() - started
    )


def assert_no_secret(result: DeployResult, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in result.stdout, "a secret is in pyinfra's stdout"
        assert secret not in result.stderr, "a secret is in pyinfra's stderr"


GRAND_TOTAL = re.compile(r"^\s*Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.MULTILINE)


def grand_total(log: str) -> dict[str, str]:
    """pyinfra's "Grand total" row in a run's text output (without --json): hosts, success
    (changed), error, no change, each "-" for 0."""
    (row,) = GRAND_TOTAL.findall(ANSI.sub("", log))
    return dict(zip(("hosts", "success", "error", "no_change"), row, strict=True))


def https_status(url: str, ca: str, login: str | None, resolve: str = "") -> str:
    """The HTTP status curl gets for `url` trusting only `ca` (`resolve`: curl's HOST:PORT:ADDR);
    the `user:password` login goes to curl on stdin, never on its command line."""
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-K", "-", "--cacert", ca]
    args += ["--resolve", resolve] if resolve else []
    config = f'user = "{login}"\n' if login else ""
    done = subprocess.run([*args, url], input=config, capture_output=True, text=True, timeout=30)
    return done.stdout
