"""The verify run (verify.py): every layer of every host, changing nothing; the fleet's report
(its table and JSON summary) is flowerbed.fleet_report. Flower's own health check, which every
deploy runs, is flowerbed.healthcheck.
"""

from __future__ import annotations

import atexit
import json
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy, operation

from . import memory
from .ban import LoginBans, banning
from .existing_site import ExistingSite, include_verdict, site_file
from .firewall import LoadedRulesetDigest, ruleset
from .fleet_report import Verdict, host_report, layer, print_fleet
from .healthcheck import FlowerHealth, healthcheck_argv
from .inputs.edge import Dashboard
from .instances import instance_run
from .probe import OperatorChecks, https_get
from .settings import Flower, FlowerOptions, Settings
from .shell import command

if TYPE_CHECKING:
    from .inputs.edge import EdgeInputs


# --- the verify run (verify.py): every layer of every host, changing nothing ------------------
#
# pyinfra stops a host at its first failing operation, so the checks never fail: they gather
# facts on the host and answers over HTTPS from the operator's machine, and record a verdict per
# layer. The last operation prints the fleet's table (stdout; stderr with --json), writes the
# JSON summary (flower_verify_summary_file), and only then fails each host that has a problem.


class UnitState(FactBase):
    """`systemctl is-active` and `is-enabled` of a unit, and its sandbox exposure score."""

    def command(self, unit: str) -> StringCommand:
        return StringCommand(
            f"echo active=$({shlex.join(['systemctl', 'is-active', unit])});"
            f" echo enabled=$({shlex.join(['systemctl', 'is-enabled', unit])} 2>/dev/null);"
            f" {shlex.join(['systemd-analyze', 'security', '--no-pager', unit])} 2>/dev/null"
            " | tail -n 1"
        )

    def process(self, output: list[str]) -> dict:
        values = dict(line.split("=", 1) for line in output if "=" in line[:8])
        score = re.search(r"exposure level for \S+: ([0-9.]+)", "\n".join(output))
        values["exposure"] = float(score.group(1)) if score else None
        values["enabled"] = values.get("enabled") or "not-found"
        return values


class InstalledFlowerHealth(FlowerHealth):
    """FlowerHealth that also answers on a host the deploy never reached (no script yet)."""

    def command(self, argv: tuple[str, ...]) -> StringCommand:
        missing = json.dumps({"ok": False, "problem": "no health check script: run the deploy"})
        return StringCommand(
            f"if [ -x {shlex.quote(argv[0])} ]; then {shlex.join(argv)};"
            f" else echo {shlex.quote(missing)}; fi"
        )


class EdgeHealth(FactBase):
    """nginx's state on the host, one `key=ok|failed` line each."""

    def command(self) -> StringCommand:
        checks = [
            ("nginx", ["systemctl", "is-active", "--quiet", "nginx"]),
            ("nginx_config", ["nginx", "-t", "-q"]),
        ]
        return StringCommand(
            "; ".join(
                f"{shlex.join(argv)} >/dev/null 2>&1 && echo {key}=ok || echo {key}=failed"
                for key, argv in checks
            )
        )

    def process(self, output: list[str]) -> dict[str, bool]:
        return {k: v == "ok" for k, _, v in (line.partition("=") for line in output)}


class LastRun(FactBase):
    """How a unit's last run ended: systemd's Result ("success" until a run fails)."""

    def command(self, unit: str) -> StringCommand:
        return command("systemctl", "show", unit, "--property=Result", "--value")

    def process(self, output: list[str]) -> str:
        return "".join(output).strip()


class StateSaved(FactBase):
    """{"age": seconds since Flower last wrote its state file (None: none yet), "used": the
    state directory's fill, e.g. "100%"}; the dbm backend names the file `db` or `db.<ext>`."""

    def command(self, db: str) -> StringCommand:
        files = f"{shlex.quote(db)} {shlex.quote(db)}.*"  # the glob stays unquoted
        newest = f"ls -t {files} 2>/dev/null | grep -v '[.]tmp' | head -n 1"
        return StringCommand(
            f"f=$({newest}); echo now=$(date +%s);"
            ' [ -z "$f" ] || echo saved=$(stat -c %Y "$f");'
            f" echo used=$(df --output=pcent {shlex.quote(str(Path(db).parent))} | tail -n 1)"
        )

    def process(self, output: list[str]) -> dict:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        saved = values.get("saved")
        age = int(values["now"]) - int(saved) if saved else None
        return {"age": age, "used": values.get("used", "?").strip()}


class MemoryUse(FactBase):
    """{"resident": Flower's resident bytes (None: not running), and the watchdog's record:
    "restarts", "last" (unix time), "at" (resident bytes then)} (flowerbed/memory.py)."""

    def command(self, unit: str, record: str) -> StringCommand:
        main_pid = shlex.join(["systemctl", "show", "--property=MainPID", "--value", unit])
        return StringCommand(
            f'pid=$({main_pid}); [ "$pid" = 0 ] || echo resident=$(ps -o rss= -p "$pid");'
            f" cat {shlex.quote(record)} 2>/dev/null; true"
        )

    def process(self, output: list[str]) -> dict:
        found: dict = {}
        for line in output:
            if line.startswith("resident=") and line[9:].strip().isdigit():
                found["resident"] = int(line[9:]) * 1024
            elif line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                found.update({k: record[k] for k in ("restarts", "last", "at") if k in record})
        return found


def memory_layer(settings: Settings) -> Verdict:
    """Flower's resident memory against its ceiling, and a recent restart at the ceiling."""
    flower = settings.flower
    limit = memory.ceiling(flower.memory_max, settings.options.max_tasks)
    found = _fact(MemoryUse, unit=flower.unit_name, record=memory.record_path(flower.state_dir))
    return Verdict(*memory.verdict(limit, found or {}, time.time()))


def firewall_layer(settings: Settings, loaded: str | None) -> None:
    """flowerbed's table is the wanted one; with flower_firewall_manage = False, none is loaded
    (the host's own firewall decides: the HTTPS layer shows whether it lets the operator in)."""
    if not settings.firewall.firewall_manage:
        layer("firewall", loaded is None, "the host's own" if loaded is None else "flowerbed's",
              "flowerbed's table is still loaded: run the deploy")  # fmt: skip
        return
    digest = ruleset(settings.firewall).digest
    problem = "no flowerbed table is loaded" if loaded is None else "a different table is loaded"
    layer(
        "firewall",
        loaded == digest,
        "current" if loaded == digest else "missing" if loaded is None else "stale",
        f"{problem}: run the deploy",
    )


def state_verdict(flower: Flower, options: FlowerOptions) -> Verdict:
    """Flower saves its state every state_save_interval: a file older than a few intervals means
    the saves fail (a full disk, most often)."""
    if not (options.persistent and options.state_save_interval):
        return Verdict(True, "n/a")
    saved = _fact(StateSaved, db=f"{flower.state_dir}/{options.db}") or {}
    interval = options.state_save_interval / 1000
    age, allowed = saved.get("age"), 3 * interval + 10
    if age is not None and age <= allowed:
        return Verdict(True, "ok")
    when = "never" if age is None else f"{age} s ago"
    return Verdict(
        False,
        "not saved",
        f"Flower last saved its state {when} (every {interval:g} s expected); its state "
        f"directory {flower.state_dir} is {saved.get('used', '?')} full: free space there",
    )


def renewal_verdict() -> Verdict:
    result = _fact(LastRun, unit="certbot.service")
    if result in ("success", ""):
        return Verdict(True, "ok")
    return Verdict(
        False,
        "failed",
        f"the last certificate renewal failed (certbot.service: {result}): the certificate "
        "served is the old one; see `journalctl -u certbot.service`",
    )


def _fact(fact, **kwargs):
    """A fact, or None when its command could not run (a host never deployed)."""
    try:
        return host.get_fact(fact, **kwargs)
    except Exception as error:  # pyinfra raises its own errors for failed fact commands
        logger.debug(f"{host.name}: {fact.__name__} failed: {error}")
        return None


@operation(is_idempotent=True)
def host_layers_checked(settings: Settings, checks: OperatorChecks, server_name: str = ""):
    """On the host: the unit, Flower's socket, nginx, the firewall table, the sandbox score."""
    if not state.is_executing:
        host.noop("each layer is checked when the run executes")
        return
    flower = settings.flower
    unit = _fact(UnitState, unit=flower.unit_name) or {}
    running = unit.get("active") == "active"
    layer(
        "unit",
        running and unit.get("enabled") == "enabled",
        f"{unit.get('active', '?')}/{unit.get('enabled', '?')}",
        f"{flower.unit_name} is {unit.get('active', 'unknown')}, {unit.get('enabled', 'unknown')}",
    )
    argv = healthcheck_argv(settings.flower_run)
    # the verify run changes nothing: no marker either
    argv = [a for a in argv if not a.startswith(("--timeout=", "--min-workers=", "--unhealthy"))]
    health = _fact(InstalledFlowerHealth, argv=(*argv, "--timeout=1", "--min-workers=0")) or {}
    layer(
        "socket",
        bool(health.get("ok")),
        "ok" if health.get("ok") else "failed",
        "Flower does not answer /healthcheck on its socket: "
        + health.get("problem", "no report (deployed?)"),
    )
    edge = _fact(EdgeHealth) or {}
    layer("nginx", bool(edge.get("nginx")), problem="nginx is not running")
    layer(
        "nginx_config",
        bool(edge.get("nginx_config")),
        problem="nginx's configuration fails `nginx -t`",
    )
    firewall_layer(settings, _fact(LoadedRulesetDigest))
    # the jail runs; its current bans are news, not a problem
    if banning(settings.auth, settings.nginx):
        bans = _fact(LoginBans) or LoginBans.default()
        shown = f"{len(bans['banned'])} banned" + (
            f": {' '.join(bans['banned'])}" if bans["banned"] else ""
        )
        layer("login_ban", bans["running"], shown, "fail2ban's jail flowerbed-login is not running")
    if path := settings.site.existing_site:  # inside the operator's site: its server includes us
        ok, problem = include_verdict(
            site_file(path, _fact(ExistingSite, path=path) or {}), server_name
        )
        layer("site_include", ok, "ok" if ok else "missing", problem)
    for name, verdict in (
        ("state", state_verdict(flower, settings.options)),
        ("memory", memory_layer(settings)),
        ("renewal", renewal_verdict() if not settings.site.existing_site else Verdict(True, "n/a")),
    ):
        layer(name, verdict.ok, verdict.value, verdict.problem)
    exposure = unit.get("exposure")
    layer(
        "sandbox",
        exposure is not None and exposure <= checks.exposure_max,
        exposure,
        f"exposure score {exposure} is above {checks.exposure_max}"
        if exposure is not None
        else "no score from systemd-analyze security",
    )
    host.noop("the host's layers were checked")
    yield from ()  # nothing to change: the op only records verdicts


@operation(is_idempotent=True)
def dashboard_checked(site: Dashboard, login: tuple[str, str] | None, checks: OperatorChecks):
    """From the operator's machine, through nginx with a login: HTTPS, the certificate, and
    Flower's API: workers, failed and stuck tasks, queues, registered tasks."""
    if not state.is_executing:
        host.noop("the dashboard is checked over HTTPS when the run executes")
        return
    for name, verdict in dashboard_verdicts(site, login, checks).items():
        layer(name, verdict.ok, verdict.value, verdict.problem)
    host.noop("the dashboard was checked over HTTPS")
    yield from ()


def dashboard_verdicts(
    site: Dashboard, login: tuple[str, str] | None, checks: OperatorChecks, now: float | None = None
) -> dict[str, Verdict]:
    now = now or time.time()

    def get(path: str):
        return https_get(site.fqdn, site.base + path, ca_bundle=checks.ca_bundle, login=login)

    verdicts = {}
    health = get("healthcheck")
    verdicts["https"] = Verdict(
        health.status == 200, health.status or health.error,
        f"https://{site.fqdn}{site.base}healthcheck answered "
        + (str(health.status) if health.status else health.error),
    )  # fmt: skip
    days = health.cert_days_left
    verdicts["certificate"] = Verdict(
        days is not None and days >= checks.cert_min_days,
        None if days is None else int(days),
        "no verified certificate" if days is None else
        f"expires in {days:.0f} days, under {checks.cert_min_days} (is certbot.timer renewing?)",
    )  # fmt: skip
    api_layers = ("workers", "failed_tasks", "stuck_tasks", "queues", "registered")
    if login is None:
        for name in api_layers:
            verdicts[name] = Verdict(True, "n/a", "")  # OAuth: no login the run could use
        return verdicts
    if health.status != 200:  # nginx or Flower is down: the API cannot tell anything
        for name in api_layers:
            verdicts[name] = Verdict(False, "?", "unknown: the dashboard does not answer")
        if not checks.expected_tasks:
            verdicts["registered"] = Verdict(True, "n/a")
        return verdicts
    verdicts.update(api_verdicts(get, checks, now))
    return verdicts


# Flower marks a worker offline after two missed heartbeats (4 s), which a loaded host or
# broker misses now and then: one that looks offline is asked about again, for up to this long,
# before it counts (a worker that is really gone costs a verify run this long).
WORKER_GRACE_S = 12.0
WORKER_ASK_EVERY_S = 1.0


def workers_answer(get, max_offline: int, grace: float = WORKER_GRACE_S):
    """Flower's api/workers?status=true, asked again while more than `max_offline` workers look
    offline, until `grace` seconds have passed."""
    deadline = time.monotonic() + grace
    while True:
        answer = get("api/workers?status=true")
        if answer.status != 200 or time.monotonic() >= deadline:
            return answer
        if sum(1 for up in answer.json().values() if not up) <= max_offline:
            return answer
        time.sleep(WORKER_ASK_EVERY_S)  # the next ask of the poll


def api_verdicts(get, checks: OperatorChecks, now: float) -> dict[str, Verdict]:
    unreachable = {}
    answers = {
        "workers": get("api/workers?status=true"),  # asked again in workers_verdict
        "failed": get(
            f"api/tasks?state=FAILURE&sort_by=-received&limit={checks.max_failed_tasks + 1}"
        ),  # fmt: skip
        "started": get("api/tasks?state=STARTED"),
        "queues": get("api/queues/length"),
    }
    for key, answer in answers.items():
        if answer.status != 200:
            unreachable[key] = f"Flower's API answered {answer.status or answer.error}"
    verdicts = {}

    if "workers" in unreachable:
        verdicts["workers"] = Verdict(False, None, unreachable["workers"])
    else:
        verdicts["workers"], online = workers_verdict(get, checks, answers["workers"].json())
        if checks.expected_tasks:
            verdicts["registered"] = registered_verdict(get, online, checks.expected_tasks)

    if "failed" in unreachable:
        verdicts["failed_tasks"] = Verdict(False, None, unreachable["failed"])
    else:
        tasks = answers["failed"].json().values()
        recent = [t for t in tasks if (t.get("failed") or t.get("timestamp") or 0) >= now - 3600]
        count = len(recent)
        shown = f"{count}+" if count > checks.max_failed_tasks else count
        verdicts["failed_tasks"] = Verdict(
            count <= checks.max_failed_tasks, shown,
            f"{shown} tasks failed in the last hour, more than {checks.max_failed_tasks}",
        )  # fmt: skip

    if "started" in unreachable:
        verdicts["stuck_tasks"] = Verdict(False, None, unreachable["started"])
    else:
        started = {uuid: t.get("started") or now for uuid, t in answers["started"].json().items()}
        stuck = sorted(
            (at, uuid) for uuid, at in started.items() if now - at > checks.max_task_seconds
        )
        verdicts["stuck_tasks"] = Verdict(
            not stuck,
            len(stuck),
            f"{len(stuck)} task(s) STARTED more than {checks.max_task_seconds} s ago (oldest "
            "first): " + ", ".join(f"{uuid} ({now - at:.0f} s)" for at, uuid in stuck[:5]),
        )

    if "queues" in unreachable:
        verdicts["queues"] = Verdict(False, None, unreachable["queues"])
    else:
        queues = {
            q["name"]: q.get("messages", 0)
            for q in answers["queues"].json().get("active_queues", [])
        }
        long = {name: n for name, n in queues.items() if n > checks.max_queue_length}
        verdicts["queues"] = Verdict(
            not long, max(queues.values(), default=0),
            ", ".join(f"{name} holds {n} messages" for name, n in long.items())
            + f" (more than {checks.max_queue_length})",
        )  # fmt: skip
    verdicts.setdefault("registered", Verdict(True, "n/a"))
    return verdicts


def worker_problems(alive: dict, min_online: int, max_offline: int) -> list[str]:
    """What is wrong with Flower's {worker: online} answer: too few online, too many offline."""
    online = [name for name, up in alive.items() if up]
    offline = sorted(name for name, up in alive.items() if not up)
    problems = []
    if len(online) < min_online:
        problems.append(f"{len(online)} worker(s) online, expected at least {min_online}")
    if len(offline) > max_offline:
        problems.append(f"offline: {', '.join(offline)}")
    return problems


def workers_verdict(
    get,
    checks: OperatorChecks,
    alive: dict,
    grace: float = WORKER_GRACE_S,
    clock=time.monotonic,
    pause=time.sleep,
) -> tuple[Verdict, list[str]]:
    """Workers online/offline against the checks, Flower asked again each second while the
    answer has a problem, until `grace` s have passed."""
    deadline = clock() + grace
    limits = (checks.min_workers_online, checks.max_workers_offline)
    while (problems := worker_problems(alive, *limits)) and clock() + 1 <= deadline:
        pause(1.0)
        answer = get("api/workers?status=true")
        if answer.status == 200:
            alive = answer.json()
    online = sorted(name for name, up in alive.items() if up)
    shown = f"{len(online)}/{len(alive) - len(online)}"
    return Verdict(not problems, shown, "; ".join(problems)), online


def registered_verdict(get, online: list[str], expected: tuple[str, ...]) -> Verdict:
    answer = get("api/workers?refresh=1")
    if answer.status != 200:
        return Verdict(False, None, f"Flower's API answered {answer.status or answer.error}")
    workers = answer.json()
    registered = {task for name in online for task in workers.get(name, {}).get("registered", [])}
    missing = [task for task in expected if task not in registered]
    return Verdict(
        not missing, f"{len(expected) - len(missing)}/{len(expected)}",
        f"no online worker registered {', '.join(missing)}",
    )  # fmt: skip


@operation(is_idempotent=True)
def fleet_verdict(checks: OperatorChecks):
    """The fleet's table and JSON summary (once), then this host's verdict."""
    if not state.is_executing:
        host.noop("the verdict is given when the run executes")
        return
    if not _reported:
        _reported.append(True)
        names = [h.name for h in state.inventory if h in state.activated_hosts]
        print_fleet(names, checks)
    report = host_report(host.name)
    if report.ok:
        host.noop("every layer is healthy")
        host.log_styled("every layer is healthy", fg="green", log_func=logger.info)
        return
    yield FunctionCommand(_report_problems, (report.problems,), {})


_reported: list[bool] = []


def _report_problems(state, host, problems: list[str]) -> bool:
    for problem in problems:
        host.log_styled(problem, fg="red", log_func=logger.error)
    return False


def _report_if_never_reached() -> None:
    """Every host failed before the verdict (e.g. none could be reached): report anyway."""
    if not _reported and _checks:
        _reported.append(True)
        print_fleet([h.name for h in state.inventory if h in state.activated_hosts], _checks[0])


_checks: list[OperatorChecks] = []


# --- more Flowers on the host (flower_instances) ------------------------------------------------


def instance_verdict(
    flower: Flower, unit: dict, health: dict, workers, min_workers: int, checks: OperatorChecks
) -> Verdict:
    """One instance: its unit, its socket, and its API through nginx with its own login."""
    if unit.get("active") != "active" or unit.get("enabled") != "enabled":
        state_ = f"{unit.get('active', 'unknown')}, {unit.get('enabled', 'unknown')}"
        return Verdict(False, "unit", f"{flower.unit_name} is {state_}")
    if not health.get("ok"):
        problem = health.get("problem", "no report (deployed?)")
        return Verdict(False, "socket", f"Flower does not answer on its socket: {problem}")
    if workers.status != 200:
        return Verdict(False, "api", f"its API answered {workers.status or workers.error}")
    alive = workers.json()
    problems = worker_problems(alive, min_workers, checks.max_workers_offline)
    online = sum(1 for up in alive.values() if up)
    return Verdict(not problems, f"{online}/{len(alive) - online}", "; ".join(problems))


@operation(is_idempotent=True)
def instances_checked(settings: Settings, instances: tuple, fqdn: str, checks: OperatorChecks):
    """Each instance (flower_instances): a layer `instance:<name>`, and the `instances` column."""
    if not state.is_executing:
        host.noop("each instance is checked when the run executes")
        return
    healthy = 0
    for one in instances:
        mine = instance_run(settings.flower_run, one.instance)
        unit = _fact(UnitState, unit=mine.flower.unit_name) or {}
        argv = [a for a in healthcheck_argv(mine)
                if not a.startswith(("--timeout=", "--min-workers=", "--unhealthy"))]  # fmt: skip
        health = _fact(InstalledFlowerHealth, argv=(*argv, "--timeout=1", "--min-workers=0")) or {}
        login = (one.logins[0].user, one.logins[0].password)

        def get(path: str, base: str = one.instance.base, login: tuple = login):
            return https_get(fqdn, base + path, ca_bundle=checks.ca_bundle, login=login)

        workers = workers_answer(get, checks.max_workers_offline)
        minimum = one.instance.healthcheck_min_workers
        verdict = instance_verdict(mine.flower, unit, health, workers, minimum, checks)
        layer(f"instance:{one.instance.name}", verdict.ok, verdict.value, verdict.problem)
        healthy += verdict.ok
    layer(
        "instances",
        healthy == len(instances),
        f"{healthy}/{len(instances)}",
        f"{len(instances) - healthy} of {len(instances)} instance(s) unhealthy",
    )
    host.noop("the instances were checked")
    yield from ()


@deploy("Verify host")
def verify_host(
    settings: Settings,
    inputs: EdgeInputs,
    checks: OperatorChecks,
    dashboard: bool = True,
    instances: tuple = (),
) -> None:
    """Every layer's health on this host; a verify run changes nothing. `dashboard` False: a
    monitoring host that runs no Flower (its own layers come before this)."""
    if not _checks:
        _checks.append(checks)
        atexit.register(_report_if_never_reached)
    if not dashboard:
        fleet_verdict(name="Verdict", checks=checks)
        return
    host_layers_checked(
        name="On the host: unit, socket, nginx, firewall, sandbox",
        settings=settings,
        checks=checks,
        server_name=inputs.site.fqdn,
    )
    login = (inputs.logins[0].user, inputs.logins[0].password) if inputs.logins else None
    dashboard_checked(
        name="Over HTTPS: certificate, login, Flower's API",
        site=inputs.site,
        login=login,
        checks=checks,
    )
    if instances:
        instances_checked(
            name="Each instance: unit, socket, its API with its own login",
            settings=settings,
            instances=instances,
            fqdn=inputs.site.fqdn,
            checks=checks,
        )
    fleet_verdict(name="Verdict", checks=checks)
