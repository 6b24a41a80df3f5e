"""The leak scan: no secret in any channel, through every kind of run, on a fresh host.

Seven runs, each with -vvv and --json: a full deploy, a dry run with diffs (after a secret
changed), a rotation of the dashboard logins (rotate.py), a broker password rotation, a verify
(verify.py), a deploy that fails on purpose (a wrong broker password: Flower's journal tail is
printed) and a DNS-01 deploy with certbot's Cloudflare plugin, which uploads the DNS
credentials (certbot, when it runs, fails: the lab cannot reach Cloudflare). Then every
channel is searched for every secret, in every form it could leak in (the value, its hex
digests and base64; for a URL the URL and its password part, raw and percent-decoded):

- all output: stdout and stderr of every run, and verify.py's JSON summary;
- the host's process list, sampled (`ps -ww -eo args`) over SSH throughout the runs;
- every regular file a non-root user (nobody, www-data, flower) can read on the host, among
  those changed since the host booted (ctime, which no one can set back; the base image
  predates every secret), and, while the runs go on, any file under /tmp, /var/tmp, /dev/shm,
  /etc or /run that others can read while it holds a secret, however briefly (inotify,
  tests/secret_watch.py);
- the host's journal (`-o verbose`: messages and the command lines systemd logged);
- the repository: every tracked or unignored file, and `git log -p --all`;
- pyinfra's temporary files: on the host its temp dir (/tmp) and /var/tmp whatever their mode,
  on this machine the TMPDIR the runs get and files under /tmp and /var/tmp changed meanwhile.

The secrets are made fresh for this test, all before the first run, so a hit can only come
from these runs. They come from an env file of its own (FLOWERBED_ENV_FILE; the lab's
.lab/lab.env is never touched): two dashboard logins (and the new ones rotate.py writes there,
given through FLOWERBED_NEW_DASHBOARD_USERS), the broker URL of a Redis user made for the test
(and its rotated and wrong passwords), the OAuth client secret, the cookie secret (changed
before the dry run), the RabbitMQ management API URL (flower_broker_api_env) and a DNS
plugin's credentials file. Flower's proxy login (made on the host, flowerbed/proxy_login.py) is
read from the host after the runs and searched for in every channel the same way.

What runs in which mode, honestly: logins are basic auth at nginx (auth_mode "basic"); the
OAuth client secret and the cookie secret are named by data and written to Flower's env file
on the host as in OAuth mode, but Flower's OAuth login flow itself is not exercised (the lab's
OAuth tests do that); the broker is the lab's Redis, so the RabbitMQ management URL is loaded,
checked and written to the host but no RabbitMQ is queried; the DNS credentials are loaded and
uploaded for certbot's Cloudflare plugin, which cannot reach Cloudflare from the lab.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import REPO, Lab
from deploy_helpers import DeployResult, run_deploy
from dotenv import dotenv_values, set_key
from test_rotate import redis_cli
from test_secret_output import fingerprints
from watch_helpers import HostSecretWatch

pytestmark = pytest.mark.lab

VVV_JSON = ("-y", "--json", "-vvv")
USERS, BROKER = "FLOWERBED_DASHBOARD_USERS", "FLOWERBED_BROKER_URL"
OAUTH2, COOKIE = "FLOWERBED_LEAK_OAUTH2_SECRET", "FLOWERBED_LEAK_COOKIE_SECRET"
BROKER_API, DNS = "FLOWERBED_LEAK_BROKER_API", "FLOWERBED_LEAK_DNS_CREDENTIALS"
# every run names the optional secrets, so each is loaded and written to the host
DATA = {
    "flower_oauth2_secret_env": OAUTH2,
    "flower_cookie_secret_env": COOKIE,
    "flower_broker_api_env": BROKER_API,
}
DNS01 = {
    "flower_tls_challenge": "dns-01",
    "flower_tls_dns_plugin": "cloudflare",
    "flower_tls_dns_credentials_env": DNS,
}
PROXY_LOGIN = "/etc/flower/flower-proxy-login.env"
DNS_CREDENTIALS = "/etc/letsencrypt/flowerbed/dns-credentials.ini"  # where the deploy puts them
LOGIN_LISTS = (USERS, "new logins")  # user:password,user:password
NON_ROOT_USERS = ("nobody", "www-data", "flower")
SAMPLE_END = "@@leak-scan-sample@@"


def fresh_secret(kind: str) -> str:
    return f"{kind}-{secrets.token_urlsafe(24)}"


# --- the secrets ------------------------------------------------------------------------------


def secret_forms(values: dict[str, str]) -> dict[str, str]:
    """{form: label} for every secret: the value's fingerprints; for a URL also its password
    (raw and percent-decoded); for the dashboard logins each password."""
    parts: dict[str, str] = {}
    for label, value in values.items():
        parts[label] = value
        if "://" in value and (password := urlsplit(value).password):
            parts[f"{label} (password)"] = password
            parts[f"{label} (password, decoded)"] = unquote(password)
        if label in LOGIN_LISTS:
            for number, pair in enumerate(value.split(",")):
                parts[f"{label} (password {number})"] = pair.partition(":")[2]
    forms = {}
    for label, part in parts.items():
        for kind, form in zip(
            ("", "sha256", "sha1", "md5", "base64"), fingerprints(part), strict=True
        ):
            forms[form] = f"{label} {kind}".strip()
    return forms


def found_in(text: str, forms: dict[str, str]) -> list[str]:
    return sorted({label for form, label in forms.items() if form in text})


# --- watching the host ------------------------------------------------------------------------


class ProcessSampler:
    """`ps -ww -eo args` on a host, again and again over one SSH session, while runs go on."""

    def __init__(self, lab: Lab, name: str):
        loop = f"while :; do ps -ww -eo args; echo {SAMPLE_END}; sleep 0.1; done"
        self.argv = [*ssh_argv(lab, name), loop]
        self.lines: set[str] = set()
        self.samples = 0

    def __enter__(self):
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()
        return self

    def read(self) -> None:
        for line in self.process.stdout:
            if line.strip() == SAMPLE_END:
                self.samples += 1
            else:
                self.lines.add(line.rstrip("\n"))

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(10)
        self.reader.join(10)


class SecretWatch(HostSecretWatch):
    """tests/secret_watch.py on the host as root for the length of a `with`: every file under
    the watched directories that others can read while it holds a secret, however briefly
    (inotify), and every file holding one left in a temp directory."""

    WATCHED = ("/tmp", "/var/tmp", "/dev/shm", "/etc", "/run")
    TEMP = ("/tmp", "/var/tmp", "/dev/shm")

    def __init__(self, lab: Lab, name: str, forms: dict[str, str]):
        pairs = [[label, form] for form, label in forms.items()]
        super().__init__(lambda command: [*ssh_argv(lab, name), command], pairs, self.WATCHED,
                         self.TEMP)  # fmt: skip

    def leaks(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for event in [*self.found("readable"), *self.found("left")]:
            where = f"host, {event['event']} (watched): {event['path']}"
            found.setdefault(where, []).append(event["secret"])
        return found


def ssh_argv(lab: Lab, name: str) -> list[str]:
    """ssh to a host as root, without lab.py in between (so ending it ends the session)."""
    return [
        "ssh", "-i", lab.state["ssh_key"], "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
        f"root@{lab.host(name)['address']}",
    ]  # fmt: skip


def on_host(lab: Lab, name: str, script: str, stdin: str = "", timeout: float = 120) -> str:
    """A shell script on the host as root, with `stdin` (where secrets travel: never argv)."""
    done = subprocess.run(
        ["python3", str(REPO / "lab" / "lab.py"), "ssh", name, script],
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stderr}"
    return done.stdout


def host_matches(lab: Lab, name: str, forms: dict[str, str], since: str) -> dict[str, list[str]]:
    """What on the host holds a secret: {where: labels}. The forms go to a root-only file for
    grep (from stdin), which is removed at the end."""
    readable = " ".join(
        f"runuser -u {user} -- find / /run /tmp /var/tmp /dev/shm -xdev -type f -readable "
        f"-newerct @{since} -print0 2>/dev/null;"
        for user in NON_ROOT_USERS
    )
    script = f"""set -u
umask 077
patterns=$(mktemp /root/leak-scan.XXXXXX)
trap 'rm -f "$patterns"' EXIT
cat > "$patterns"
id flower >/dev/null
echo "== readable"
{{ {readable} }} | sort -zu | xargs -0 -r grep -HoF -f "$patterns" -- 2>/dev/null
echo "== temp"
find /tmp /var/tmp -xdev -type f -print0 | xargs -0 -r grep -HoF -f "$patterns" -- 2>/dev/null
echo "== journal"
journalctl --no-pager -o verbose | grep -oF -f "$patterns" | sed 's/^/journal:/'
echo "== end"
"""
    output = on_host(lab, name, script, stdin="\n".join(forms) + "\n")
    assert output.rstrip().endswith("== end"), output[-500:]
    matches: dict[str, list[str]] = {}
    section = ""
    for line in output.splitlines():
        if line.startswith("== "):
            section = line[3:]
            continue
        where = line.partition(":")[0]  # a path (grep -H) or "journal"
        matches.setdefault(f"host {section}: {where}", []).extend(found_in(line, forms))
    return {where: sorted(set(labels)) for where, labels in matches.items() if labels}


def host_temp_leftovers(lab: Lab, name: str) -> list[str]:
    return on_host(lab, name, "find /tmp /var/tmp -xdev -name 'pyinfra-*' -print").split()


# --- this machine -----------------------------------------------------------------------------


def repository_matches(forms: dict[str, str]) -> dict[str, list[str]]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
        ).stdout

    matches = {}
    if labels := found_in(git("log", "-p", "--all", "--no-color"), forms):
        matches["git log -p --all"] = labels
    for path in git("ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        file = REPO / path
        if file.is_file() and (labels := found_in(file.read_text(errors="replace"), forms)):
            matches[f"repository: {path}"] = labels
    return matches


def local_temp_matches(
    forms: dict[str, str], roots: list[Path], since: float, mine: Path
) -> dict[str, list[str]]:
    """Files under `roots` changed since `since` that hold a secret. Left out: this test's own
    tmp_path (it holds the operator's env file on purpose) and the lab's directory, where the
    lab hosts' own filesystems live (a checkout under /tmp has them there; the hosts' files are
    scanned as the hosts' users see them)."""
    skipped = {mine, REPO / ".lab"}
    matches = {}
    for root in roots:
        for current, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(current, d) not in skipped]
            for name in files:
                path = Path(current, name)
                try:
                    if not path.is_file() or path.stat().st_ctime < since:
                        continue
                    text = path.read_bytes()[: 8 << 20].decode(errors="replace")
                except OSError:  # gone, or a socket/fifo we cannot read: holds nothing we see
                    continue
                if labels := found_in(text, forms):
                    matches[f"this machine: {path}"] = labels
    return matches


# --- the test ---------------------------------------------------------------------------------


class Runs:
    """The runs, one after another, with the operator's env file and a TMPDIR of their own."""

    def __init__(self, host: str, env_file: Path, tmpdir: Path):
        self.host, self.env_file, self.tmpdir = host, env_file, tmpdir
        self.results: dict[str, DeployResult] = {}

    def run(self, label: str, data: dict | None = None, env: dict | None = None, **kw):
        environment = {"FLOWERBED_ENV_FILE": str(self.env_file), "TMPDIR": str(self.tmpdir)}
        environment.update(env or {})
        if kw.get("deploy_file") == "rotate.py":  # every host using a variable is a target:
            kw["inventory"] = "tests/inventories/lab.py"  # an inventory of this host alone
            environment["FLOWERBED_TEST_ONLY_HOSTS"] = json.dumps([self.host])
        result = run_deploy([self.host], {**DATA, **(data or {})}, env=environment, **kw)
        self.results[label] = result
        return result


def made_secrets(broker: str) -> dict[str, str]:
    """Every secret the runs will use, made before the first run (so the host's watcher knows
    them all): rotate.py gets its new logins from FLOWERBED_NEW_DASHBOARD_USERS."""
    made = {
        USERS: f"leak:{fresh_secret('Login1')},ops:{fresh_secret('Login2')}",
        "new logins": f"leak:{fresh_secret('Login3')},ops:{fresh_secret('Login4')}",
        BROKER: broker.format(fresh_secret("Broker1")),
        "new broker URL": broker.format(fresh_secret("Broker2")),
        "wrong broker URL": broker.format(fresh_secret("Wr0ng")),
        OAUTH2: fresh_secret("OAuth"),
        COOKIE: fresh_secret("Cookie1"),
        "new cookie secret": fresh_secret("Cookie2"),
        BROKER_API: f"http://monitoring:{fresh_secret('RabbitApi')}@10.77.0.1:15672/api/",
        "DNS credentials token": fresh_secret("DnsToken"),
    }
    return made


def write_operator_files(made: dict[str, str], tmp_path: Path) -> Path:
    """The operator's env file (0600) and the DNS plugin's credentials file it names."""
    dns_ini = tmp_path / "cloudflare.ini"
    dns_ini.write_text(f"dns_cloudflare_api_token = {made['DNS credentials token']}\n")
    env_file = tmp_path / "ops.env"
    keys = (USERS, BROKER, OAUTH2, COOKIE, BROKER_API)
    env_file.write_text("".join(f"{key}={made[key]}\n" for key in keys) + f"{DNS}={dns_ini}\n")
    for path in (dns_ini, env_file):
        path.chmod(0o600)
    return env_file


def test_no_secret_leaks_through_any_channel(lab: Lab, fresh_host, tmp_path: Path):
    for variable in (USERS, BROKER, OAUTH2, COOKIE, BROKER_API, DNS, "FLOWERBED_NEW_BROKER_URL"):
        assert variable not in os.environ, f"${variable} in the environment would win"
    started = time.time() - 1
    name = fresh_host(prefix="leak")["name"]
    since = on_host(lab, name, "date +%s").strip()
    broker_user = f"leak{os.getpid()}"
    made = made_secrets(f"redis://{broker_user}:{{}}@{lab.state['broker']['address']}/0")
    forms = secret_forms(made)
    env_file = write_operator_files(made, tmp_path)
    pyinfra_tmp = tmp_path / "pyinfra-tmp"
    pyinfra_tmp.mkdir()
    runs = Runs(name, env_file, pyinfra_tmp)
    summary = tmp_path / "verify.json"
    lab_password = urlsplit(lab.secrets[BROKER]).password
    first, rotated = (urlsplit(made[key]).password for key in (BROKER, "new broker URL"))
    acl = ["ACL", "SETUSER", broker_user, "on", f">{first}", f">{rotated}", "~*", "&*", "+@all"]
    redis_cli(lab, lab_password, *acl)  # both passwords: the broker's two-password window
    try:
        with ProcessSampler(lab, name) as sampler, SecretWatch(lab, name, forms) as watch:
            deployed = runs.run("deploy", flags=VVV_JSON)
            assert deployed.ok, deployed.explain()

            set_key(env_file, COOKIE, made["new cookie secret"], quote_mode="never")
            preview = runs.run("dry run", flags=("--dry", "--diff", "-vvv", "--json"))
            assert preview.ok, preview.explain()
            assert "/etc/flower/flower.env (secret: content not shown)" in preview.stderr

            logins = runs.run(
                "rotation",
                env={"FLOWERBED_NEW_DASHBOARD_USERS": made["new logins"]},
                flags=VVV_JSON,
                deploy_file="rotate.py",
            )
            assert logins.ok, logins.explain()
            assert "Every host confirmed" in logins.log, logins.explain()
            assert dotenv_values(env_file)[USERS] == made["new logins"]

            rolled = runs.run(
                "broker rotation",
                {"rotate": "broker"},
                env={"FLOWERBED_NEW_BROKER_URL": made["new broker URL"]},
                flags=VVV_JSON,
                deploy_file="rotate.py",
            )
            assert rolled.ok, rolled.explain()
            assert re.search(rf"\[{name}\]\s+Flower is healthy on the new broker URL", rolled.log)

            verified = runs.run(
                "verify",
                {"flower_verify_summary_file": str(summary)},
                flags=VVV_JSON,
                deploy_file="verify.py",
            )
            assert name in json.loads(summary.read_text())["hosts"], verified.explain()

            failing = runs.run(
                "failing deploy",
                {"flower_healthcheck_timeout": 5},
                env={BROKER: made["wrong broker URL"]},
                flags=VVV_JSON,
            )
            assert not failing.ok, "a wrong broker password fails the deploy"
            assert re.search(rf"\[{name}\] +journal: ", failing.log), failing.explain()

            runs.run("DNS-01 deploy", DNS01, flags=VVV_JSON)  # certbot, if it runs, fails
        assert sampler.samples >= 50, f"only {sampler.samples} process lists sampled"
        uploaded = on_host(lab, name, f"grep -c dns_cloudflare_api_token {DNS_CREDENTIALS}")
        assert uploaded.strip() == "1", "the DNS credentials reached the host"
        for key, value in dotenv_values(env_file).items():
            assert key == DNS or value in made.values(), f"${key}: a secret the test did not make"

        # Flower's proxy login is made on the host, never in .env: read as root, searched too
        proxy = on_host(lab, name, f"sed -n 's/^FLOWER_BASIC_AUTH=//p' {PROXY_LOGIN}").strip()
        assert proxy.startswith("flowerbed-proxy:"), "the deploy made Flower's proxy login"
        forms.update(secret_forms({"proxy login": proxy, "proxy login (password)":
                                   proxy.partition(":")[2]}))  # fmt: skip
        leaks = watch.leaks()
        for label, result in runs.results.items():
            if found := found_in(result.stdout + result.stderr, forms):
                leaks[f"output of the {label}"] = found
        if found := found_in(summary.read_text(), forms):
            leaks["verify.py's JSON summary"] = found
        if found := found_in("\n".join(sampler.lines), forms):
            leaks["the host's process list"] = found
        leaks.update(host_matches(lab, name, forms, since))
        leaks.update(repository_matches(forms))
        roots = [pyinfra_tmp, Path("/tmp"), Path("/var/tmp")]
        leaks.update(local_temp_matches(forms, roots, started, tmp_path))
        leftovers = host_temp_leftovers(lab, name)
        print(
            f"\nleak scan: {len(runs.results)} runs "
            f"({', '.join(f'{k} {r.seconds:.0f} s' for k, r in runs.results.items())}), "
            f"{len(made)} secrets in {len(forms)} forms, {sampler.samples} process lists, "
            f"{len(watch.events)} watcher events, pyinfra files left in the host's temp dirs: "
            f"{len(leftovers)}"
        )
        assert not leaks, "secrets leaked (labels only):\n" + json.dumps(leaks, indent=1)
    finally:
        redis_cli(lab, lab_password, "ACL", "DELUSER", broker_user)
