"""Taking flowerbed off a host (remove.py): the host is left as it was before flowerbed, apart
from the apt packages (kept unless flower_remove_packages) and Flower's state (kept in a dated,
root-only backup unless flower_remove_keep_state = False).

What flowerbed puts on a host is one list, `host_paths`, built from the constants the deploy
writes with (and tests/unit/test_remove_units.py checks that every such constant is in it).
The order of the parts below is the order they run:

 1. Flower's unit is stopped and disabled (Flower saves its state on stop);
 2. its state directory goes into /var/backups/flowerbed-<service>-<UTC time>.tar.gz (0600);
 3. nginx: the marked include line and the snippet (existing_site.flower_not_included), then
    flowerbed's conf.d files and logins, each through `nginx -t`; Debian's default site is linked
    again if it is still the file nginx-common shipped and no other site claims default_server;
    then every instance the host's record names (flower_instances): its unit stopped, its files
    gone, its state in /var/backups/flowerbed-flower-<name>-<UTC time>.tar.gz (0600);
 4. the certificate lineage (`certbot delete`, or `certbot revoke` first);
 5. the firewall: the rollback timer stopped, the boot unit disabled, its files and drop-in
    removed, then the table deleted in one nft transaction. Deleting a table only lets more
    in, so the run's own SSH connection (and any new one) is never cut;
 6. the accounts flowerbed created: those its record lists as created (ownership.RECORD; on a
    host deployed before the record, those marked in the user's GECOS comment, flower.CREATED).
    What the record lists as adopted (claimed, flower_names_claimed) stays: accounts, the unit's
    file (the unit is stopped) and directories (flowerbed's own files in them go);
 7. the apt packages flowerbed installed (recorded since it did), only if asked;
 8. every remaining path of `host_paths`, systemd reloaded; then one report line per host.

A host where nothing of flowerbed's is found is told so and not changed; a second run changes
nothing.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from pyinfra import host, logger, state
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from . import facts
from .auth import HTPASSWD
from .ban import FILES as BAN_FILES
from .decoy import USERS_MAP
from .existing_site import SNIPPET, ExistingSite, flower_not_included
from .firewall import (
    BOOT_DIR,
    BOOT_RULESET,
    NFTABLES_DROP_IN,
    NFTABLES_DROP_IN_DIR,
    SCRIPT_DIR,
    STATE_DIR,
)
from .firewall import UNIT as FIREWALL_UNIT
from .firewall import UNIT_FILE as FIREWALL_UNIT_FILE
from .flower import Accounts, created_accounts
from .healthcheck import HEALTHCHECK_PATH, UNHEALTHY_MARKER
from .hooks import hook_paths
from .hostfiles import PathStates
from .inputs.instances import instances_dir
from .instances import RecordedInstances, remove_instances
from .listeners import TABLE, LoadedTable
from .nginx import DEFAULT_SITE, HTTP_SITE, HTTPS_SITE, STOCK_DEFAULT, checked_or_restored
from .ownership import ClaimedNames, adopted, created
from .packages import APT_PROXY_CONF, EXTRA_CA_DIR, INSTALLED_RECORD, INSTALLED_RECORD_DIR
from .proxy_login import RELOAD_NGINX
from .resources import DEFAULTS
from .settings import Flower, Remove
from .shell import command
from .tls import (
    ACME_CA_BUNDLE,
    CERT_NAME,
    CERTBOT_DROP_IN,
    DEPLOY_HOOK,
    FLOWERBED_DIR,
    LIVE_DIR,
    RENEWAL_CONF,
    WEBROOT,
)
from .units import UnitStates, unit_state

BACKUP_DIR = "/var/backups"
# files/flowerbed-firewall arms it (TIMER=flowerbed-firewall-rollback): when it fires it loads
# the table saved before an unconfirmed ruleset, so it is stopped before the table goes
ROLLBACK_TIMER = "flowerbed-firewall-rollback.timer"
# the firewall's boot files: gone (and systemd reloaded) before the table is deleted, so neither
# the boot unit nor nftables.service's drop-in can load it again
FIREWALL_BOOT_FILES = (NFTABLES_DROP_IN, FIREWALL_UNIT_FILE, BOOT_RULESET)
# flowerbed's nginx files, in the order they go (each through nginx -t): the site before the
# logins and the login names' map it includes
NGINX_FILES = (HTTPS_SITE, HTTP_SITE, HTPASSWD, USERS_MAP)
# directories flowerbed's files were put in with `mkdir -p`: removed when they end up empty
# Removed when left empty. Not /usr/local/libexec, SCRIPT_DIR's parent: a directory of the FHS
# that Debian 13 makes (no package owns it) and 12 does not, so nothing says whose it is.
EMPTIED_PARENTS = (NFTABLES_DROP_IN_DIR, posixpath.dirname(CERTBOT_DROP_IN))


@dataclass(frozen=True)
class HostPath:
    path: str
    what: str


def host_paths(flower: Flower) -> tuple[HostPath, ...]:
    """Every path flowerbed puts on a host (Flower's state directory and the nginx files too,
    which go first, in their own steps), from the constants the deploy writes them with."""
    return (
        HostPath(flower.unit_file, "Flower's unit"),
        HostPath(flower.config_dir, "Flower's config, secrets and proxy login"),
        HostPath(flower.install_dir, "Flower's venvs"),
        HostPath(flower.state_dir, "Flower's state"),
        *(HostPath(path, "nginx site and logins") for path in NGINX_FILES),
        HostPath(SNIPPET, "Flower's locations for your site"),
        HostPath(DEPLOY_HOOK, "certbot's deploy hook"),
        HostPath(CERTBOT_DROP_IN, "certbot.service drop-in"),
        HostPath(FLOWERBED_DIR, "certbot's ACME CA bundle and DNS-01 files"),
        HostPath(NFTABLES_DROP_IN, "nftables.service drop-in"),
        HostPath(FIREWALL_UNIT_FILE, "the firewall's boot unit"),
        HostPath(BOOT_DIR, "the firewall's boot ruleset"),
        HostPath(SCRIPT_DIR, "the firewall switch and health check scripts"),
        HostPath(APT_PROXY_CONF, "apt's egress proxy"),
        HostPath(EXTRA_CA_DIR, "the extra CAs"),
        HostPath(INSTALLED_RECORD_DIR, "the ACME webroot, firewall state, health and apt records"),
        *(HostPath(path, "fail2ban's jail for failed logins") for path in BAN_FILES),
    )


def inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# what host_paths holds by way of a directory (so every constant is accounted for)
COVERED = (BOOT_RULESET, STATE_DIR, WEBROOT, UNHEALTHY_MARKER, INSTALLED_RECORD, HEALTHCHECK_PATH,
           ACME_CA_BUNDLE)  # fmt: skip


def outermost(paths: list[str]) -> list[str]:
    """`paths` without those inside another of them (rm -rf of that one removes them)."""
    return [p for p in paths if not any(q != p and inside(p, q) for q in paths)]


def files_to_remove(flower: Flower, kept: Collection[str] = frozenset()) -> tuple[str, ...]:
    """The paths the last step removes: all of host_paths but what earlier steps handle, and
    what the record lists as adopted (`kept`: "unit:NAME", "dir:/PATH"), of which only
    flowerbed's own files go."""
    earlier = {flower.state_dir, SNIPPET, *NGINX_FILES}
    own_files = {  # an adopted directory stays; flowerbed's files in it go
        flower.config_dir: (flower.config_file, flower.env_file, flower.proxy_login_env,
                            flower.proxy_login_nginx, *hook_paths(flower.config_dir),
                            instances_dir(flower)),
        flower.install_dir: (flower.venv, flower.venvs_dir),
    }  # fmt: skip
    paths: list[str] = []
    for path in (p.path for p in host_paths(flower) if p.path not in earlier):
        if path == flower.unit_file and f"unit:{flower.service}" in kept:
            continue
        paths += own_files.get(path, ()) if f"dir:{path}" in kept else [path]
    return tuple(paths)


def unit_files(flower: Flower) -> tuple[str, ...]:
    return (flower.unit_file, FIREWALL_UNIT_FILE, NFTABLES_DROP_IN, CERTBOT_DROP_IN)


def backup_path(service: str, now: datetime) -> str:
    """Where Flower's state is kept: dated (UTC, to the second), so runs never overwrite one."""
    return f"{BACKUP_DIR}/flowerbed-{service}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def backup_commands(state_dir: str, backup: str) -> list[StringCommand]:
    """The state directory into a root-only archive (made 0600: umask 077), then gone."""
    archive = command("tar", "--create", "--gzip", f"--file={backup}", "--directory=/",
                      state_dir.lstrip("/"))  # fmt: skip
    return [
        StringCommand("umask", "077", "&&", archive),
        command("chmod", "600", backup),
        command("rm", "-rf", state_dir),
    ]


# --- facts ----------------------------------------------------------------------------------


class TableLoaded(LoadedTable):
    """Whether flowerbed's nft table is loaded (with or without its digest comment)."""

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return any(line.strip() for line in output)


class RecordedPackages(FactBase):
    """The apt packages flowerbed recorded installing (packages.INSTALLED_RECORD)."""

    def command(self) -> StringCommand:
        return StringCommand(command("cat", INSTALLED_RECORD), "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return list(dict.fromkeys(line.strip() for line in output if line.strip()))


# Debian's default site: whether it is the file nginx-common shipped, whether it is enabled, and
# which other files (not flowerbed's) claim default_server
DEFAULT_SITE_SCRIPT = "; ".join(
    (
        "shipped=$(dpkg-query -W -f='${Conffiles}\\n' nginx-common 2>/dev/null"
        f" | awk '$1 == \"{STOCK_DEFAULT}\" {{print $2}}')",
        f"present=$(md5sum {STOCK_DEFAULT} 2>/dev/null | cut -d' ' -f1)",
        'if [ -n "$shipped" ] && [ "$shipped" = "$present" ]; then echo stock; fi',
        f"if [ -e {DEFAULT_SITE} ] || [ -L {DEFAULT_SITE} ]; then echo enabled; fi",
        "grep -lE '^[^#]*default_server' /etc/nginx/sites-enabled/* /etc/nginx/conf.d/*.conf"
        " 2>/dev/null | grep -v '/flowerbed[^/]*$' | sed 's/^/claims /'",
        "true",
    )
)


class DefaultSite(FactBase):
    """{"stock": bool, "enabled": bool, "claimed_by": [files]} for Debian's default site."""

    def command(self) -> StringCommand:
        return StringCommand("sh", "-c", shlex.quote(DEFAULT_SITE_SCRIPT))

    @staticmethod
    def default() -> dict:
        return {"stock": False, "enabled": False, "claimed_by": []}

    def process(self, output: list[str]) -> dict:
        return {
            "stock": "stock" in output,
            "enabled": "enabled" in output,
            "claimed_by": [line[7:] for line in output if line.startswith("claims ")],
        }


def relink_default(found: dict) -> bool:
    """Link Debian's default site again: it is the stock file, not enabled, and no other site
    claims default_server (flowerbed disables it only while it is the stock file)."""
    return found["stock"] and not found["enabled"] and not found["claimed_by"]


class FlowerbedFound(FactBase):
    """What of flowerbed's is on the host: paths of `paths` that exist, `unit:`, `table`."""

    def command(self, paths: tuple[str, ...], units: tuple[str, ...]) -> StringCommand:
        listing = command("find", *paths, "-maxdepth", "0", "-printf", "%p\\n")
        enabled = command("systemctl", "list-unit-files", "--no-legend", *units)
        table = command("nft", "list", "table", *TABLE)
        return StringCommand(
            listing, "2>/dev/null;", enabled, "2>/dev/null", "|", "sed", "'s/^/unit: /';",
            table, ">/dev/null", "2>&1", "&&", "echo", "table;", "true",
        )  # fmt: skip

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line.split()[0] if line.startswith("/") else " ".join(line.split()[:2])
                for line in output if line.strip()]  # fmt: skip


# --- operations -----------------------------------------------------------------------------


@operation()
def unit_gone_quiet(unit: str):
    """`unit` is neither running nor enabled."""
    current = unit_state(unit)
    if not (current["running"] or current["enabled"]):
        host.noop(f"{unit} is stopped and disabled")
        return
    yield command("systemctl", "disable", "--now", unit)


@operation()
def state_backed_up(state_dir: str, backup: str, keep: bool):
    """Flower's state directory is gone; `keep`: into `backup` first."""
    current = facts.ask(PathStates, paths=(state_dir,), digests=False).get(state_dir)
    if current is None:
        host.noop(f"no {state_dir}")
        return
    if keep:
        yield from backup_commands(state_dir, backup)
    else:
        yield command("rm", "-rf", state_dir)


@operation()
def nginx_files_removed(paths: tuple[str, ...]):
    """Each of `paths` is gone, each through `nginx -t` (put back, and the host fails, if nginx
    needs it: another file of the host's includes it)."""
    current = facts.ask(PathStates, paths=paths, digests=False)
    present = [path for path in paths if path in current]
    if not present:
        host.noop(f"no {', '.join(paths)}")
    for path in present:
        backup = f"{path}.flowerbed-old"
        yield command("cp", "-p", path, backup)
        yield command("rm", "-f", path)
        yield checked_or_restored(path, backup)


@operation()
def default_site_relinked():
    """Debian's default site is enabled again if flowerbed could have disabled it."""
    found = facts.ask(DefaultSite)
    if not relink_default(found):
        why = (
            "enabled" if found["enabled"] else
            "not the file nginx-common shipped" if not found["stock"] else
            f"default_server is claimed by {', '.join(found['claimed_by'])}"
        )  # fmt: skip
        host.noop(f"Debian's default site stays as it is ({why})")
        return
    yield command("ln", "-s", STOCK_DEFAULT, DEFAULT_SITE)
    yield checked_or_restored(DEFAULT_SITE, None)


@operation()
def lineage_deleted(revoke: bool):
    """certbot holds no lineage named CERT_NAME (revoked first, with `revoke`)."""
    current = facts.ask(PathStates, paths=(LIVE_DIR, RENEWAL_CONF, ACME_CA_BUNDLE), digests=False)
    if LIVE_DIR not in current and RENEWAL_CONF not in current:
        host.noop(f"certbot holds no lineage {CERT_NAME}")
        return
    env = ["env", f"REQUESTS_CA_BUNDLE={ACME_CA_BUNDLE}"] if ACME_CA_BUNDLE in current else []
    name = ["--non-interactive", f"--cert-name={CERT_NAME}"]
    if revoke:
        yield command(*env, "certbot", "revoke", *name, "--reason=cessationofoperation",
                      "--delete-after-revoke")  # fmt: skip
    else:
        yield command("certbot", "delete", *name)


@operation()
def table_deleted():
    """flowerbed's table is not loaded and nothing loads it again: the rollback timer stopped,
    the boot unit disabled and its files gone (systemd reloaded), then the table deleted in
    one transaction."""
    timer = unit_state(ROLLBACK_TIMER)
    boot = unit_state(FIREWALL_UNIT)
    files = facts.ask(PathStates, paths=FIREWALL_BOOT_FILES, digests=False)
    loaded = facts.ask(TableLoaded)
    if not (timer["running"] or boot["running"] or boot["enabled"] or files or loaded):
        host.noop("no flowerbed table is loaded and none loads at boot")
        return
    if timer["running"]:
        yield command("systemctl", "stop", ROLLBACK_TIMER)
    if boot["running"] or boot["enabled"]:
        yield command("systemctl", "disable", "--now", FIREWALL_UNIT)
    if files:
        yield command("rm", "-f", *sorted(files))
        yield command("systemctl", "daemon-reload")
    if loaded:
        yield command("nft", "delete", "table", *TABLE)


def accounts_to_delete(
    found: dict, user: str, group: str, record: dict[str, str] | None
) -> tuple[list[str], list[str]]:
    """(users, groups) flowerbed created that exist: those its record lists as created; on a
    host deployed before the record, Flower's user and group if the GECOS mark says so."""
    if record is None:
        made = created_accounts(found, user, group)
        return [u for u in (user,) if u in made], [g for g in (group,) if g in made]
    users = [u for u in created(record, "user") if u in found["passwd"]]
    return users, [g for g in created(record, "group") if g in found["group"]]


@operation()
def accounts_deleted(user: str, group: str, record: tuple[tuple[str, str], ...] | None):
    """The users and groups flowerbed created are gone (adopted ones, others', stay)."""
    names = dict(record) if record is not None else None
    found = facts.ask(Accounts, **account_names(user, group, names))
    users, groups = accounts_to_delete(found, user, group, names)
    if not users and not groups:
        kept = f"{user} was not created by flowerbed" if user in found["passwd"] else f"no {user}"
        host.noop(f"no account to delete ({kept})")
        return
    for name in users:
        yield command("userdel", name)
    for name in groups:  # userdel deletes a same-named group with no members left itself
        yield StringCommand(command("getent", "group", name), ">/dev/null", "&&",
                            command("groupdel", name), "||", "true")  # fmt: skip


def account_names(user: str, group: str, record: dict[str, str] | None) -> dict:
    """The Accounts fact's arguments: Flower's user and group, and those the record made."""
    users = tuple(dict.fromkeys((user, *created(record, "user"))))
    return {"users": users, "groups": tuple(dict.fromkeys((group, *created(record, "group"))))}


@operation()
def packages_purged(purge: bool):
    """With `purge`, the apt packages flowerbed installed are purged (the record says which)."""
    recorded = facts.ask(RecordedPackages)
    if not purge or not recorded:
        host.noop("apt packages kept" if recorded else "no apt package recorded as flowerbed's")
        return
    yield command("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "--yes", "purge", *recorded)


@operation()
def paths_removed(paths: tuple[str, ...], units: tuple[str, ...], parents: tuple[str, ...]):
    """None of `paths` exists; systemd reloaded if one of `units` went; `parents` removed if
    they are left empty."""
    current = facts.ask(PathStates, paths=(*paths, *parents), digests=False)
    present = outermost([path for path in paths if path in current])
    if not present:
        host.noop("none of flowerbed's files is left")
        return
    yield command("rm", "-rf", *present)
    for parent in parents:
        if parent in current:
            yield StringCommand(command("rmdir", "--ignore-fail-on-non-empty", parent))
    if set(present) & set(units):
        yield command("systemctl", "daemon-reload")
    if set(present) & set(BAN_FILES):  # fail2ban drops the jail and its nftables table
        # (Debian 12's own sshd jail reads an auth.log hosts without rsyslog lack: without
        # flowerbed's jail file fail2ban cannot start, so it stops, as a kept package may)
        yield StringCommand(
            command("systemctl", "try-reload-or-restart", "fail2ban"), "||",
            command("systemctl", "stop", "fail2ban"),
        )  # fmt: skip
    if any(inside(path, EXTRA_CA_DIR) for path in present):
        yield command("update-ca-certificates", "--fresh")


@operation(is_idempotent=True)
def removal_report(message: str):
    """The closing line: what was kept where."""
    if state.is_executing:
        host.log_styled(message, fg="green", log_func=logger.warning)
    host.noop(message)
    return
    yield


# --- the parts ------------------------------------------------------------------------------


def flower_stopped(flower: Flower) -> OperationMeta:
    facts.expect(UnitStates, units=(flower.unit_name,))
    return unit_gone_quiet(name="Flower stopped and disabled", unit=flower.unit_name)


def state_kept(flower: Flower, remove: Remove, backup: str) -> OperationMeta:
    facts.expect(PathStates, paths=(flower.state_dir,), digests=False)
    where = f"backed up to {backup}" if remove.keep_state else "deleted"
    return state_backed_up(
        name=f"Flower's state ({flower.state_dir}) {where}",
        state_dir=flower.state_dir,
        backup=backup,
        keep=remove.keep_state,
    )


def nginx_removed(own_site: bool) -> None:
    """`own_site`: flowerbed served a site of its own (port 80), which is when it disables
    Debian's default site: only then is that linked again."""
    facts.expect(ExistingSite, path="")
    facts.expect(PathStates, paths=(SNIPPET,))
    facts.expect(PathStates, paths=NGINX_FILES, digests=False)
    changes = [
        flower_not_included(name="No site includes Flower's locations (marked lines, snippet)"),
        nginx_files_removed(name="flowerbed's nginx sites and logins removed", paths=NGINX_FILES),
    ]
    if own_site:
        facts.expect(DefaultSite)
        changes.append(
            default_site_relinked(name="Debian's default site enabled again (if still stock)")
        )
    server.shell(
        name="Test and reload nginx (flowerbed's files removed)",
        commands=[RELOAD_NGINX],
        _if=any_changed(*changes),
    )


def certificate_removed(remove: Remove) -> OperationMeta:
    facts.expect(PathStates, paths=(LIVE_DIR, RENEWAL_CONF, ACME_CA_BUNDLE), digests=False)
    how = "revoked and deleted" if remove.revoke_certificate else "deleted"
    return lineage_deleted(
        name=f"Certificate lineage {CERT_NAME} {how}", revoke=remove.revoke_certificate
    )


def firewall_removed() -> OperationMeta:
    for unit in (ROLLBACK_TIMER, FIREWALL_UNIT):  # as unit_state asks (merged into one command)
        facts.expect(UnitStates, units=(unit,))
    facts.expect(PathStates, paths=FIREWALL_BOOT_FILES, digests=False)
    facts.expect(TableLoaded)
    return table_deleted(name="Firewall: boot unit off, table deleted (SSH stays open)")


def accounts_removed(flower: Flower, record: dict[str, str] | None) -> OperationMeta:
    facts.expect(Accounts, **account_names(flower.user, flower.group, record))
    return accounts_deleted(
        name=f"Accounts flowerbed created ({flower.user}, {flower.group})",
        user=flower.user,
        group=flower.group,
        record=tuple(sorted(record.items())) if record is not None else None,
    )


def packages_removed(remove: Remove) -> OperationMeta:
    facts.expect(RecordedPackages)
    what = "purged" if remove.packages else "kept"
    return packages_purged(name=f"apt packages flowerbed installed {what}", purge=remove.packages)


def files_removed(flower: Flower, kept: set[str]) -> OperationMeta:
    paths = files_to_remove(flower, kept)
    facts.expect(PathStates, paths=(*paths, *EMPTIED_PARENTS), digests=False)
    return paths_removed(
        name="flowerbed's remaining files removed",
        paths=paths,
        units=unit_files(flower),
        parents=EMPTIED_PARENTS,
    )


def report_line(flower: Flower, remove: Remove, backup: str, had_state: bool,
                packages: list[str], state_adopted: bool = False) -> str:  # fmt: skip
    """What the host keeps, in one line."""
    if state_adopted:
        state_note = f"Flower's state kept in {flower.state_dir} (adopted: flower_names_claimed)"
    elif not had_state:
        state_note = f"no state to keep ({flower.state_dir} absent)"
    elif remove.keep_state:
        state_note = f"Flower's state kept in {backup}"
    else:
        state_note = f"Flower's state deleted ({flower.state_dir})"
    if remove.packages:
        packages_note = f"apt packages purged: {', '.join(packages) or 'none recorded'}"
    else:
        listed = ", ".join(packages) if packages else "those it needed (none recorded)"
        packages_note = f"apt packages kept: {listed} (flower_remove_packages = True purges them)"
    return f"flowerbed removed: {state_note}; {packages_note}"


def found_on_host(flower: Flower) -> list[str]:
    """What of flowerbed's is on the host (asked once, when the run is planned)."""
    paths = tuple(p.path for p in host_paths(flower))
    units = (flower.unit_name, FIREWALL_UNIT)
    return host.get_fact(FlowerbedFound, paths=paths, units=units)


@deploy("flowerbed: remove", data_defaults=DEFAULTS)
def remove_flowerbed(flower: Flower, remove: Remove, now: datetime | None = None) -> None:
    """flowerbed off the host: every part in the module's docstring, in order."""
    found = found_on_host(flower)
    if not found:
        removal_report(
            name="Nothing to remove",
            message="flowerbed was never deployed here (none of its files, units or firewall "
            "table found): nothing changed",
        )
        return
    backup = backup_path(flower.service, now or datetime.now(UTC))
    if not state.is_executing:  # the plan (and --dry) lists what goes
        host.log_styled(
            f"remove.py takes off this host: {', '.join(found)}",
            fg="yellow",
            log_func=logger.warning,
        )
    packages = host.get_fact(RecordedPackages)
    record = host.get_fact(ClaimedNames)  # ownership.RECORD: created or adopted
    kept = adopted(record)
    state_adopted = f"dir:{flower.state_dir}" in kept
    flower_stopped(flower)
    if not state_adopted:
        state_kept(flower, remove, backup)
    nginx_removed(own_site=HTTP_SITE in found)
    # after nginx stopped serving them: every instance the host's record names (flower_instances)
    remove_instances(flower, host.get_fact(RecordedInstances), remove.keep_state, now)
    certificate_removed(remove)
    firewall_removed()
    accounts_removed(flower, record)
    packages_removed(remove)
    files_removed(flower, kept)
    had_state = flower.state_dir in found
    removal_report(
        name="Removal report",
        message=report_line(flower, remove, backup, had_state, packages, state_adopted),
    )
