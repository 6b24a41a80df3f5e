"""remove.py on a fresh host (issue 21, part 4): the host ends as it was before flowerbed, apart
from the apt packages the deploy installed (kept by default) and the named backup of Flower's
state.

One host, in order: a snapshot before anything (files under /etc, /opt, /var/lib, /usr/local
with type, owner, mode, link target and sha256; the accounts; the nft ruleset; the unit files;
the listening ports); remove.py on the never-deployed host (a clear message, no change); the
deploy; remove.py --dry (nothing changes); remove.py; remove.py again (no change); a second
snapshot compared with the first; and a deploy after the removal. A new SSH connection is
opened every second while remove.py runs, and after every step.

Allowed to differ: the files of the packages the deploy installed (`dpkg-query -L`), their own
state (NEW_PACKAGE_STATE, and systemd's enable links for the units they ship), logs, caches,
apt's and dpkg's state, and what runs on its own on any Debian host (NOISE).
"""

from __future__ import annotations

import re
import shlex
import threading
import time

import pytest
from conftest import Lab
from deploy_helpers import run_deploy
from test_firewall import tcp

from flowerbed.firewall import SCRIPT_DIR
from flowerbed.packages import EXTRA_CA_DIR

pytestmark = pytest.mark.lab

REMOVE = "remove.py"
ROOTS = "/etc /opt /var/lib /usr/local"
SNAPSHOT = f"""
find {ROOTS} -xdev -printf 'P\\t%p\\t%y %u:%g %m %l\\n' 2>/dev/null
find {ROOTS} -xdev -type f -print0 2>/dev/null | xargs -0 -r sha256sum | sed 's/^/S\\t/'
getent passwd | sed 's/^/U\\t/'
getent group | sed 's/^/G\\t/'
nft list ruleset | sed 's/^/N\\t/'
systemctl list-unit-files --no-legend --no-pager | awk '{{print "F\\t" $1 " " $2}}'
ss -Hltnup | awk '{{print "L\\t" $1 " " $5 " " $7}}'
dpkg-query -W -f='D\\t${{Package}} ${{db:Status-Abbrev}}\\n'
true
"""
# what changes on any Debian host by itself, or is the packages' (not flowerbed's) doing
NOISE = (
    "/var/lib/apt", "/var/lib/dpkg", "/var/cache", "/var/log", "/var/lib/systemd",
    "/var/lib/ucf", "/var/lib/python", "/var/lib/logrotate", "/var/lib/dhcp",
    "/var/lib/private", "/etc/ld.so.cache",
    # the shadow tools' backups of the account files (the accounts are compared themselves)
    "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-",
)  # fmt: skip
# each package's own state outside its files, allowed when the deploy installed that package
NEW_PACKAGE_STATE = {
    "nginx-common": ("/etc/nginx", "/var/lib/nginx"),
    "certbot": ("/etc/letsencrypt", "/var/lib/letsencrypt"),
    "python3-certbot": ("/etc/letsencrypt", "/var/lib/letsencrypt"),
    "ca-certificates": ("/etc/ssl/certs", "/etc/ca-certificates.conf"),
    "fail2ban": ("/var/lib/fail2ban",),  # its ban database
}


def snapshot(lab: Lab, name: str) -> dict[str, dict[str, str] | set[str]]:
    output = lab.ssh(name, SNAPSHOT, timeout=300, check=True).stdout
    taken: dict = {"paths": {}, "accounts": set(), "ruleset": [], "units": set(),
                   "ports": set(), "packages": set()}  # fmt: skip
    digests = {}
    for line in output.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "P":
            path, _, description = rest.partition("\t")
            taken["paths"][path] = description
        elif kind == "S":
            digest, _, path = rest.partition("  ")
            digests[path] = digest
        elif kind in ("U", "G"):
            taken["accounts"].add(f"{kind} {rest}")
        elif kind == "N":
            taken["ruleset"].append(rest)
        elif kind == "F":
            taken["units"].add(rest)
        elif kind == "L":
            taken["ports"].add(rest)
        elif kind == "D" and rest.split()[1:2] == ["ii"]:
            taken["packages"].add(rest.split()[0])
    for path, digest in digests.items():
        taken["paths"][path] += f" sha256:{digest}"
    return taken


def under(path: str, prefixes) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def package_files(lab: Lab, name: str, packages: set[str]) -> set[str]:
    if not packages:
        return set()
    listed = lab.ssh(name, ["dpkg-query", "-L", *sorted(packages)], timeout=120, check=True)
    return {line.strip() for line in listed.stdout.splitlines() if line.startswith("/")}


def differences(lab: Lab, name: str, before: dict, after: dict) -> list[str]:
    """What differs between the snapshots beyond what the kept packages explain."""
    new_packages = after["packages"] - before["packages"]
    owned = package_files(lab, name, new_packages)
    units_shipped = {p.rsplit("/", 1)[1] for p in owned if "/systemd/system/" in p}
    state = [p for package in new_packages for p in NEW_PACKAGE_STATE.get(package, ())]

    init_scripts = {p.rsplit("/", 1)[1] for p in owned if p.startswith("/etc/init.d/")}

    def explained(path: str) -> bool:
        wants = path.startswith("/etc/systemd/system/") and path.rsplit("/", 1)[1] in units_shipped
        # update-rc.d's links for a kept package's init script (its postinst makes them)
        rc_link = re.fullmatch(r"/etc/rc[0-6S]\.d/[SK]\d\d(.+)", path)
        runlevels = bool(rc_link) and rc_link[1] in init_scripts
        # the FHS's /usr/local/libexec, which Debian 13 makes and 12 does not, stays once made
        standard = path == "/usr/local/libexec"
        return path in owned or wants or runlevels or standard or under(path, (*NOISE, *state))

    found = []
    paths = before["paths"].keys() | after["paths"].keys()
    for path in sorted(paths):
        was, now = before["paths"].get(path), after["paths"].get(path)
        if was != now and not explained(path):
            found.append(f"{path}: {was or 'absent'} -> {now or 'absent'}")
    found += [f"account {a}: gone" for a in sorted(before["accounts"] - after["accounts"])]
    found += [f"account {a}: new" for a in sorted(after["accounts"] - before["accounts"])]
    if before["ruleset"] != after["ruleset"]:
        found.append("nft ruleset:\n" + "\n".join(after["ruleset"]))
    for unit in sorted(before["units"] ^ after["units"]):
        if unit.split()[0] not in units_shipped:
            found.append(f"unit file {unit}: {'new' if unit in after['units'] else 'gone'}")
    for port in sorted(before["ports"] ^ after["ports"]):
        if '"nginx"' not in port:  # the kept nginx serves Debian's default site on 80
            found.append(f"listening {port}: {'new' if port in after['ports'] else 'gone'}")
    return found


class SshWatch:
    """A new SSH connection to the host every second while it runs; each failure recorded."""

    def __init__(self, lab: Lab, name: str):
        self.lab, self.name = lab, name
        self.failures: list[str] = []
        self.tries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.tries += 1
            result = self.lab.ssh(self.name, ["true"], timeout=20)
            if result.returncode != 0:
                self.failures.append(f"{time.strftime('%T')}: {result.stderr.strip()}")
            self._stop.wait(1)

    def __enter__(self) -> SshWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def ssh_works(lab: Lab, name: str, step: str) -> None:
    result = lab.ssh(name, ["true"], timeout=30)
    assert result.returncode == 0, f"SSH refused after {step}: {result.stderr}"


def test_remove_leaves_the_host_as_it_was(lab: Lab, fresh_host):
    name = fresh_host(prefix="rm")["name"]
    before = snapshot(lab, name)
    assert not any("flower" in path for path in before["paths"]), "a fresh host"

    never = run_deploy(name, deploy_file=REMOVE)
    assert never.ok, never.explain()
    assert "flowerbed was never deployed here" in never.log, never.log
    assert never.totals["success"] == 0, never.explain()
    ssh_works(lab, name, "remove.py on a host never deployed")

    deployed = run_deploy(name)
    assert deployed.ok, deployed.explain()
    ssh_works(lab, name, "the deploy")
    assert tcp(lab, "lab-allowed", name, 443) == "open"
    user = lab.ssh(name, ["getent", "passwd", "flower"], check=True).stdout
    assert "created by flowerbed" in user, user

    dry = run_deploy(name, deploy_file=REMOVE, flags=("--dry", "--json"))
    assert dry.ok, dry.explain()
    assert "remove.py takes off this host" in dry.log and "/etc/flower" in dry.log, dry.log
    still = lab.ssh(name, "test -d /etc/flower && nft list table inet flowerbed >/dev/null")
    assert still.returncode == 0, "--dry changed the host"
    ssh_works(lab, name, "remove.py --dry")

    with SshWatch(lab, name) as watch:
        removed = run_deploy(name, deploy_file=REMOVE)
    assert removed.ok, removed.explain()
    assert not watch.failures, f"SSH failed during remove.py: {watch.failures}"
    assert watch.tries >= 3, "the watch ran while remove.py did"
    ssh_works(lab, name, "remove.py")
    report = [line for line in removed.log.splitlines() if "flowerbed removed:" in line]
    assert report and "apt packages kept" in report[0], removed.log
    backup = report[0].split("state kept in ")[1].split(";")[0].strip()
    assert backup.startswith("/var/backups/flowerbed-flower-") and backup.endswith(".tar.gz")
    kept = lab.ssh(name, ["stat", "-c", "%U:%G %a", backup], check=True).stdout.strip()
    assert kept == "root:root 600", kept
    archived = lab.ssh(name, ["tar", "-tzf", backup], check=True).stdout
    assert "var/lib/flower/" in archived, archived

    again = run_deploy(name, deploy_file=REMOVE)
    assert again.ok and again.totals["success"] == 0, again.explain()
    ssh_works(lab, name, "a second remove.py")

    after = snapshot(lab, name)
    found = differences(lab, name, before, after)
    assert not found, "the host differs from before flowerbed:\n" + "\n".join(found)
    left = [p for p in after["paths"] if "flower" in p.lower() and not under(p, NOISE)]
    assert not left, f"flowerbed's paths left behind: {left}"
    for gone in (SCRIPT_DIR, EXTRA_CA_DIR, "/etc/flower", "/opt/flower", "/var/lib/flowerbed"):
        assert gone not in after["paths"], gone
    assert tcp(lab, "lab-allowed", name, 443) == "refused", "the dashboard's 443 still answers"
    default = lab.ssh(name, ["readlink", "/etc/nginx/sites-enabled/default"]).stdout.strip()
    assert default == "/etc/nginx/sites-available/default", "Debian's default site linked again"

    redeployed = run_deploy(name)
    assert redeployed.ok, redeployed.explain()
    assert tcp(lab, "lab-allowed", name, 443) == "open"
    ssh_works(lab, name, "a deploy after the removal")
    new_packages = shlex.join(sorted(after["packages"] - before["packages"]))
    print(
        f"remove.py: {removed.seconds:.1f} s ({watch.tries} SSH logins meanwhile), again "
        f"{again.seconds:.1f} s; kept {backup} and the packages {new_packages}"
    )
