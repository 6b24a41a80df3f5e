"""A change rolled out batch by batch: never every dashboard down at once.

    python -m flowerbed.rollout inventory/prod.py deploy.py [pyinfra options]
    python -m flowerbed.rollout inventory/prod.py deploy.py --data flower_rollout_batch=5
    python -m flowerbed.rollout inventory/prod.py flowerbed.runs.deploy    # only the wheel

pyinfra runs a deploy operation by operation across all its hosts, so a restart reaches every
host in the same step. This runs pyinfra once per batch instead (`--limit`): first a dry run of
every host (flowerbed's preflight: every host's data and secrets, and SSH, before any change),
then the canary alone (flower_rollout_canary), then batches of flower_rollout_batch hosts in
inventory order. A batch passes when pyinfra exits 0: every host of it ran the whole deploy,
whose last steps are flowerbed's own checks (Flower's health check after a change, `nginx -t`
before a reload). The first batch that fails stops the rollout, and the report names the hosts
that changed, those that failed and those left alone. The options after the deploy file go to
every pyinfra run as they are (arguments, never a shell string); the environment, which holds
the secrets (.env), is passed through unchanged and no secret is printed here.
See docs/operations.md (Rolling out a change) for how this maps onto --serial, --parallel and
--fail-percent.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .settings import Rollout, SettingsError, rollout_knobs

PYINFRA = (sys.executable, "-m", "pyinfra")
USAGE = (
    "usage: python -m flowerbed.rollout INVENTORY DEPLOY [pyinfra options] "
    "(DEPLOY: a deploy file, or a function such as flowerbed.runs.deploy)"
)
DEPLOY = re.compile(r".+\.py|[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")  # what pyinfra runs per host
# options the rollout sets itself, or that would undo its batches
REFUSED = {
    "--serial": "the rollout already changes hosts batch by batch (flower_rollout_batch = 1)",
    "--no-wait": "hosts must finish the deploy, its health check included, batch by batch",
    "--dry": "preview with `pyinfra INVENTORY DEPLOY --dry --diff`: a rollout changes hosts",
    "--json": "the rollout reads pyinfra's --json itself and prints its own report",
    "--fail-percent": "any failed host stops the rollout (as --fail-percent 0 would)",
}
SECRET_OPTIONS = ("--ssh-password", "--password", "--ssh-key-password", "--key-password")
# what debug-inventory needs to resolve the hosts' data as each batch's run will
INVENTORY_OPTIONS = ("--data", "--group-data", "--chdir", "--config")
ADDED = ("-y", "--yes")  # every batch runs without a prompt: accepted, and added anyway


class RolloutError(Exception):
    """Bad arguments or knobs: nothing was run, no host changed."""


# --- arguments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    inventory: str
    deploy: str
    options: tuple[str, ...]  # passed to every pyinfra run
    limits: tuple[str, ...] = ()  # --limit values: host names, groups or globs
    excludes: tuple[str, ...] = ()  # --exclude values


def parsed(argv: Sequence[str]) -> Invocation:
    """The inventory, the deploy file and the pyinfra options; --limit and --exclude taken out
    (the rollout limits each run to its batch), options that would undo the batches refused."""
    if len(argv) < 2 or argv[0].startswith("-") or not DEPLOY.fullmatch(argv[1]):
        raise RolloutError(USAGE)
    options: list[str] = []
    chosen: dict[str, list[str]] = {"--limit": [], "--exclude": []}
    rest = iter(argv[2:])
    for arg in rest:
        name, equals, value = arg.partition("=")
        if name in REFUSED:
            raise RolloutError(f"{name} is not for a rollout: {REFUSED[name]}")
        if name in SECRET_OPTIONS:
            raise RolloutError(
                f"{name}: a password on a command line is readable by every user of this "
                "machine (ps). Fix: use an SSH key (ssh-agent for its passphrase)"
            )
        if name in chosen:
            value = value if equals else next(rest, "")
            if not value:
                raise RolloutError(f"{name} needs a host name, group or glob")
            chosen[name].extend(v for v in value.split(",") if v)
        elif arg not in ADDED:
            options.append(arg)
    limits, excludes = (tuple(chosen[name]) for name in ("--limit", "--exclude"))
    return Invocation(argv[0], argv[1], tuple(options), limits, excludes)


# --- the fleet and its batches --------------------------------------------------------------


@dataclass(frozen=True)
class FleetHost:
    name: str
    groups: tuple[str, ...]
    data: dict = field(hash=False, compare=False)

    def matches(self, patterns: Sequence[str]) -> bool:
        """A pattern names the host or one of its groups, or is a glob over them (as pyinfra's
        --limit and --exclude)."""
        return any(fnmatch.fnmatch(n, p) for n in (self.name, *self.groups) for p in patterns)


def fleet(
    inventory_json: str, limits: Sequence[str] = (), excludes: Sequence[str] = ()
) -> list[FleetHost]:
    """The hosts of `pyinfra INVENTORY debug-inventory --json`, in inventory order: those a
    limit matches (all without one), less those an exclude matches."""
    hosts = [
        FleetHost(entry["name"], tuple(entry["groups"]), entry["data"])
        for entry in json.loads(inventory_json)
    ]
    chosen = [h for h in hosts if (not limits or h.matches(limits)) and not h.matches(excludes)]
    if hosts and not chosen:
        raise RolloutError("--limit/--exclude leave no host of the inventory")
    return chosen


def knobs(hosts: Sequence[FleetHost]) -> Rollout:
    """The one batch size and canary of the rollout: validated, the same for every host."""
    if not hosts:
        raise RolloutError("the inventory holds no host")
    found: dict[Rollout, list[str]] = {}
    for host in hosts:
        try:
            found.setdefault(rollout_knobs(host.data), []).append(host.name)
        except SettingsError as error:
            raise RolloutError(f"host {host.name}: {error}") from None
    if len(found) > 1:
        differ = "; ".join(
            f"batch {k.batch}, canary {k.canary or 'first host'!r} for {', '.join(names)}"
            for k, names in found.items()
        )
        raise RolloutError(
            f"flower_rollout_batch/flower_rollout_canary differ between hosts ({differ}). "
            "Fix: set them once for every host (group_data/all.py, a group's data or --data)"
        )
    rollout = next(iter(found))
    names = [host.name for host in hosts]
    if rollout.canary and rollout.canary not in names:
        raise RolloutError(
            f"flower_rollout_canary: {rollout.canary!r} is not a host of this rollout. "
            f"Fix: name one of {', '.join(names)}, or '' for the first"
        )
    return rollout


def batches(names: Sequence[str], batch: int, canary: str = "") -> list[list[str]]:
    """The canary alone (the first host when none is named), then the others, in order, in
    batches of `batch`."""
    if not names:
        return []
    canary = canary or names[0]
    rest = [name for name in names if name != canary]
    return [[canary], *(rest[i : i + batch] for i in range(0, len(rest), batch))]


# --- the outcome of each batch, and the report ----------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    hosts: tuple[str, ...]
    ok: bool
    changed: tuple[str, ...] = ()  # hosts where an operation made a change
    failed: tuple[str, ...] = ()  # hosts pyinfra failed
    known: bool = True  # False: pyinfra left no results (every host of the batch failed)


def batch_result(hosts: Sequence[str], returncode: int, stdout: str) -> BatchResult:
    """What pyinfra's --json says of one batch. When every host of a run fails, pyinfra stops
    before printing its results: then every host of the batch failed and may have changed."""
    try:
        results = json.loads(stdout)["results"]
        operations = results["operations"]
    except (ValueError, KeyError, TypeError):
        return BatchResult(tuple(hosts), ok=False, failed=tuple(hosts), known=False)
    changed = {name for op in operations for name in op.get("success", ())}
    failed = set(results.get("failed_hosts", ()))
    return BatchResult(
        tuple(hosts),
        ok=returncode == 0 and not failed,
        changed=tuple(h for h in hosts if h in changed),
        failed=tuple(h for h in hosts if h in failed),
    )


@dataclass
class Report:
    planned: list[list[str]]
    results: list[BatchResult] = field(default_factory=list)
    preflight_failed: bool = False

    @property
    def ok(self) -> bool:
        return (
            not self.preflight_failed
            and len(self.results) == len(self.planned)
            and all(r.ok for r in self.results)
        )

    def hosts(self) -> dict[str, list[str]]:
        """Every host of the rollout under one heading: changed, failed, unchanged, left alone."""
        ran = {h for result in self.results for h in result.hosts}
        groups: dict[str, list[str]] = {"changed": [], "failed": [], "unchanged": []}
        for result in self.results:
            for name in result.hosts:
                if name in result.failed:
                    groups["failed"].append(name)
                elif name in result.changed:
                    groups["changed"].append(name)
                else:
                    groups["unchanged"].append(name)
        groups["left alone"] = [h for batch in self.planned for h in batch if h not in ran]
        return groups

    def text(self) -> str:
        total = len(self.planned)
        if self.preflight_failed:
            head = "rollout refused: the dry run of every host failed (above); no host was changed"
        elif self.ok:
            head = f"rollout done: {total} batch(es), each healthy before the next"
        else:
            stopped = len(self.results)
            where = "the canary" if stopped == 1 else f"batch {stopped} of {total}"
            head = f"rollout STOPPED at {where}: a host failed the deploy or its health check"
        lines = [head]
        for heading, names in self.hosts().items():
            note = ""
            if heading == "failed" and any(not r.known for r in self.results):
                note = " (no results from pyinfra: they may have changed)"
            lines.append(f"  {heading} ({len(names)}): {', '.join(names) or '-'}{note}")
        return "\n".join(lines)


# --- running pyinfra ------------------------------------------------------------------------

Runner = Callable[[list[str], bool], subprocess.CompletedProcess]


def run_pyinfra(args: list[str], capture: bool) -> subprocess.CompletedProcess:
    """pyinfra with the operator's environment unchanged; its log (stderr) goes to the
    terminal as it comes; with `capture`, stdout (the --json results) is read here, otherwise
    it joins the log: this run's stdout holds only the report."""
    stdout = subprocess.PIPE if capture else sys.stderr
    return subprocess.run([*PYINFRA, *args], stdout=stdout, text=True, check=False)


def limited(hosts: Sequence[str]) -> list[str]:
    return [arg for name in hosts for arg in ("--limit", name)]


def plan(invocation: Invocation, run: Runner = run_pyinfra) -> list[list[str]]:
    """The batches: the inventory's hosts (pyinfra resolves it, its group data and --data
    included, without connecting to any host) and their rollout knobs."""
    listed = run(
        [invocation.inventory, "debug-inventory", "--json", *data_options(invocation)], True
    )
    if listed.returncode != 0:
        raise RolloutError(f"pyinfra could not load {invocation.inventory} (its log is above)")
    hosts = fleet(listed.stdout, invocation.limits, invocation.excludes)
    rollout = knobs(hosts)
    return batches([h.name for h in hosts], rollout.batch, rollout.canary)


def data_options(invocation: Invocation) -> list[str]:
    """The options that change what the inventory's hosts and data are (INVENTORY_OPTIONS)."""
    found, options = [], iter(invocation.options)
    for arg in options:
        name, equals, _ = arg.partition("=")
        if name in INVENTORY_OPTIONS:
            found += [arg] if equals else [arg, next(options, "")]
    return found


def roll(invocation: Invocation, planned: list[list[str]], run: Runner = run_pyinfra) -> Report:
    report = Report(planned)
    everyone = [name for batch in planned for name in batch]
    common = [invocation.inventory, invocation.deploy, "-y", *invocation.options]
    say(f"rollout: dry run of {len(everyone)} host(s): data, secrets and SSH before any change")
    if run([*common, "--dry", *limited(everyone)], False).returncode != 0:
        report.preflight_failed = True
        return report
    for number, batch in enumerate(planned, start=1):
        what = "the canary" if number == 1 else f"batch {number} of {len(planned)}"
        say(f"rollout: {what}: {', '.join(batch)}")
        done = run([*common, "--json", *limited(batch)], True)
        result = batch_result(batch, done.returncode, done.stdout)
        report.results.append(result)
        if not result.ok:
            break
    return report


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None, run: Runner = run_pyinfra) -> int:
    """0: every batch healthy; 1: stopped at a failed batch (or the dry run failed); 2: bad
    arguments or knobs, nothing run."""
    try:
        invocation = parsed(sys.argv[1:] if argv is None else argv)
        planned = plan(invocation, run)
    except RolloutError as error:
        say(f"rollout: {error}")
        return 2
    report = roll(invocation, planned, run)
    print(report.text(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
