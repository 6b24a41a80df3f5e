#!/usr/bin/env python3
"""flowerbed's lab: throw-away Debian hosts with real systemd, on this machine.

Each host boots systemd as PID 1 under systemd-nspawn, on an overlay over a cached
read-only base image, with its own address on a private bridge and sshd with a key the
lab generates. Around the hosts the lab runs, on the bridge address:

  tinyproxy             the only way out for hosts (apt, PyPI); IP forwarding stays off
  pebble                a local ACME CA (HTTP-01 and DNS-01), like Let's Encrypt
  pebble-challtestsrv   the lab's DNS: hN.flowerbed.test and ACME TXT records
  redis-server          a real Celery broker, with a password
  celery worker         the demo app (lab/demo_app), plus a producer sending it tasks

and two client network namespaces, lab-allowed and lab-denied, inside and outside the
allowed sources that inventory/lab.py configures.

    lab.py up [--hosts N] [--distro bookworm|trixie]   idempotent; a second run is a no-op
    lab.py host-up NAME [--distro D]                    boot one more fresh host
    lab.py host-down NAME                               remove one host
    lab.py oidc-up                                      start the OpenID Connect provider
    lab.py down                                         remove everything the lab made
    lab.py status                                       print .lab/state.json
    lab.py ssh NAME [CMD...]                            run a command on a host as root

State for tools and tests: .lab/state.json (and .lab/lab.env, the lab's secrets, 0600).
Runs as root. Base images are cached in /var/cache/flowerbed-lab (FLOWERBED_LAB_CACHE).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("FLOWERBED_LAB_DIR", REPO / ".lab"))
CACHE = Path(os.environ.get("FLOWERBED_LAB_CACHE", "/var/cache/flowerbed-lab"))
STATE = LAB / "state.json"
SECRETS = LAB / "lab.env"
RUN = LAB / "run"
HOSTS = LAB / "hosts"
SSH_KEY = LAB / "ssh" / "id_ed25519"
ACTIVE_LAB = CACHE / "active-lab"  # the .lab of the last lab brought up on this machine

BRIDGE = "fb-lab"
NETWORK = ipaddress.ip_network("10.77.0.0/24")
GATEWAY = "10.77.0.1"
BRIDGE_MAC = "02:66:62:6c:61:62"  # locally administered
DOMAIN = "flowerbed.test"
NAMESPACES = {"lab-allowed": "10.77.0.200", "lab-denied": "10.77.0.250"}
# Addresses the lab's inventory admits to HTTPS: the lab machine and lab-allowed's /27.
ALLOWED_SOURCES = ["10.77.0.1/32", "10.77.0.192/27"]
HOST_ADDRESSES = range(11, 190)
PROXY_PORT = 3128
DNS_PORT = 53
DNS_MANAGEMENT_PORT = 8055
ACME_PORT = 14000
ACME_MANAGEMENT_PORT = 15000
REDIS_PORT = 6379
DISTROS = ("bookworm", "trixie")
MIRROR = os.environ.get("FLOWERBED_LAB_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "nftables",
    "ca-certificates",
    "curl",
    "procps",
]
BASE_VERSION = "1"  # bump to rebuild cached base images when their recipe changes
MACHINE_PACKAGES = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "tinyproxy": "tinyproxy",
    "pebble": "pebble",
    "redis-server": "redis-server",
    "openssl": "openssl",
    "curl": "curl",
    "ssh": "openssh-client",
    "ip": "iproute2",
}
HOSTS_BLOCK = ("# BEGIN flowerbed-lab", "# END flowerbed-lab")
SSH_OPTIONS = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=2",
]


class LabError(Exception):
    """A lab step failed; the message says which and what to do."""


def log(message: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


# ---------------------------------------------------------------- processes by PID file


def pid_alive(name: str) -> int | None:
    pid_file = RUN / f"{name}.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return None if pid_gone_or_zombie(pid) else pid


def spawn(name: str, args: list[str], env: dict | None = None, cwd: Path | None = None) -> int:
    """Start a lab process in its own session, logging to .lab/run/NAME.log."""
    RUN.mkdir(parents=True, exist_ok=True)
    with open(RUN / f"{name}.log", "ab") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
    (RUN / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def stop(name: str, timeout: float = 10) -> None:
    """Stop a lab process by its PID file: SIGTERM, then SIGKILL after `timeout`."""
    pid = pid_alive(name)
    if pid:
        signal_process(pid, signal.SIGTERM)
        if not wait_for(lambda: pid_gone_or_zombie(pid), timeout, ignore=True):
            signal_process(pid, signal.SIGKILL)
    (RUN / f"{name}.pid").unlink(missing_ok=True)


def signal_process(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def pid_gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def wait_for(check, timeout: float, ignore: bool = False, what: str = "") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    if ignore:
        return False
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------- machine packages


def ensure_machine_packages() -> None:
    missing = sorted({pkg for cmd, pkg in MACHINE_PACKAGES.items() if not shutil.which(cmd)})
    if not shutil.which("pebble-challtestsrv"):
        missing = sorted({*missing, "pebble"})
    if not missing:
        return
    log(f"installing {' '.join(missing)}")
    run(["apt-get", "update", "-q"])
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    # Debian starts services on install where it can; the lab runs its own instances.
    for service in ("tinyproxy", "redis-server"):
        subprocess.run(["service", service, "stop"], capture_output=True)


# ---------------------------------------------------------------- base image


def base_image(distro: str) -> Path:
    base = CACHE / f"base-{distro}"
    marker = base / ".flowerbed-base"
    if marker.exists() and marker.read_text().strip() == BASE_VERSION:
        return base
    log(f"building the {distro} base image (cold: about a minute)")
    build = CACHE / f"base-{distro}.build"
    shutil.rmtree(build, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    debootstrap = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}"]
    if distro != "bookworm" and not keyring_knows(distro):
        # Debian 12's keyring predates Debian 13's release key; the InRelease file is still
        # fetched over the lab machine's trusted path.
        debootstrap.append("--no-check-gpg")
    run([*debootstrap, distro, str(build), MIRROR], timeout=900)
    customise_base(build, distro)
    shutil.rmtree(base, ignore_errors=True)
    build.rename(base)
    marker.write_text(BASE_VERSION)
    return base


def keyring_knows(distro: str) -> bool:
    listing = run(
        [
            "gpg",
            "--no-default-keyring",
            "--keyring",
            "/usr/share/keyrings/debian-archive-keyring.gpg",
            "--list-keys",
        ],
        check=False,
    )
    return f"/{distro})" in listing.stdout


def customise_base(root: Path, distro: str) -> None:
    """Make the image generic: identity, keys and network are per host."""
    for crt in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy(crt, root / "usr/local/share/ca-certificates" / crt.name)
    run(["chroot", str(root), "update-ca-certificates"])
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {distro} main\ndeb {MIRROR} {distro}-updates main\n"
        f"deb http://deb.debian.org/debian-security {distro}-security main\n"
    )
    run(["systemctl", f"--root={root}", "enable", "systemd-networkd.service"])
    run(
        [
            "systemctl",
            f"--root={root}",
            "mask",
            "e2scrub_reap.service",
            "systemd-networkd-wait-online.service",
        ],
        check=False,
    )
    run(["chroot", str(root), "apt-get", "clean"])


# ---------------------------------------------------------------- network


def ensure_bridge() -> None:
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        # A fixed MAC: by default a bridge takes its ports' lowest, so a host coming or going
        # would change it and leave every host's ARP entry for the gateway stale (ssh times out).
        run(["ip", "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge"])
        run(["ip", "addr", "add", f"{GATEWAY}/{NETWORK.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_namespace(name: str, address: str) -> None:
    bridge_end = f"fb-{name.removeprefix('lab-')}"[:15]
    if (
        run(
            ["ip", "netns", "exec", name, "ip", "-4", "addr", "show", "eth0"], check=False
        ).stdout.find(address)
        >= 0
    ):
        return
    remove_namespace(name)
    run(["ip", "netns", "add", name])
    run(["ip", "link", "add", bridge_end, "type", "veth", "peer", "name", "eth0", "netns", name])
    run(["ip", "link", "set", bridge_end, "master", BRIDGE, "up"])
    in_ns = ["ip", "netns", "exec", name]
    run([*in_ns, "ip", "addr", "add", f"{address}/{NETWORK.prefixlen}", "dev", "eth0"])
    run([*in_ns, "ip", "link", "set", "eth0", "up"])
    run([*in_ns, "ip", "link", "set", "lo", "up"])


def remove_namespace(name: str) -> None:
    run(["ip", "link", "del", f"fb-{name.removeprefix('lab-')}"[:15]], check=False)
    run(["ip", "netns", "del", name], check=False)


def write_etc_hosts(hosts: list[dict]) -> None:
    lines = Path("/etc/hosts").read_text().splitlines()
    if HOSTS_BLOCK[0] in lines:
        start, end = lines.index(HOSTS_BLOCK[0]), lines.index(HOSTS_BLOCK[1])
        del lines[start : end + 1]
    if hosts:
        lines += [HOSTS_BLOCK[0], *(f"{h['address']} {h['fqdn']}" for h in hosts), HOSTS_BLOCK[1]]
    Path("/etc/hosts").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- services on the bridge


def ensure_proxy() -> None:
    if pid_alive("tinyproxy"):
        return
    conf = RUN / "tinyproxy.conf"
    conf.write_text(
        f"Port {PROXY_PORT}\nListen {GATEWAY}\nTimeout 600\nMaxClients 100\nLogLevel Warning\n"
        f"Allow {NETWORK}\nConnectPort 443\nDisableViaHeader Yes\n"
    )
    spawn("tinyproxy", ["tinyproxy", "-d", "-c", str(conf)])
    wait_for(lambda: port_open(GATEWAY, PROXY_PORT), 10, what="tinyproxy")


def ensure_dns() -> None:
    if pid_alive("dns"):
        return
    spawn(
        "dns",
        [
            "pebble-challtestsrv",
            "-defaultIPv4",
            "",
            "-defaultIPv6",
            "",
            "-dns01",
            f"{GATEWAY}:{DNS_PORT}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"{GATEWAY}:{DNS_MANAGEMENT_PORT}",
        ],
    )
    wait_for(lambda: port_open(GATEWAY, DNS_MANAGEMENT_PORT), 10, what="the lab's DNS")


def publish_dns(hosts: list[dict]) -> None:
    """A records for every host's name in the lab's DNS (used by pebble's validation)."""
    api = f"http://{GATEWAY}:{DNS_MANAGEMENT_PORT}"
    for host in hosts:
        name = host["fqdn"] + "."
        for path, body in (
            ("clear-a", {"host": name}),
            ("add-a", {"host": name, "addresses": [host["address"]]}),
        ):
            urllib.request.urlopen(f"{api}/{path}", json.dumps(body).encode(), timeout=5)


def ensure_acme() -> dict:
    acme = LAB / "acme"
    acme.mkdir(parents=True, exist_ok=True)
    ca, cert, key = acme / "ca.pem", acme / "cert.pem", acme / "key.pem"
    if not cert.exists():
        make_acme_listener_cert(acme)
    config = acme / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"{GATEWAY}:{ACME_PORT}",
                    "managementListenAddress": f"{GATEWAY}:{ACME_MANAGEMENT_PORT}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": 80,
                    "tlsPort": 443,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    root = acme / "root.pem"
    if not pid_alive("pebble"):
        spawn(
            "pebble",
            ["pebble", "-config", str(config), "-dnsserver", f"{GATEWAY}:{DNS_PORT}"],
            env={"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"},
            cwd=acme,
        )
        wait_for(lambda: port_open(GATEWAY, ACME_MANAGEMENT_PORT), 15, what="pebble")
        root.unlink(missing_ok=True)  # pebble makes a new issuing root at every start
    if not root.exists():
        run(
            [
                "curl",
                "-sSf",
                "--cacert",
                str(ca),
                "-o",
                str(root),
                f"https://{GATEWAY}:{ACME_MANAGEMENT_PORT}/roots/0",
            ]
        )
    return {
        "directory": f"https://{GATEWAY}:{ACME_PORT}/dir",
        "ca_bundle": str(ca),
        "root": str(root),
        "dns_management": f"http://{GATEWAY}:{DNS_MANAGEMENT_PORT}",
    }


def make_acme_listener_cert(acme: Path) -> None:
    """A CA and a server certificate for pebble's own HTTPS listener on the bridge."""
    openssl = ["openssl", "req", "-nodes", "-newkey", "rsa:2048"]
    run(
        [
            *openssl,
            "-x509",
            "-days",
            "3650",
            "-subj",
            "/CN=flowerbed lab ACME listener CA",
            "-keyout",
            str(acme / "ca.key"),
            "-out",
            str(acme / "ca.pem"),
        ]
    )
    run(
        [
            *openssl,
            "-subj",
            f"/CN={GATEWAY}",
            "-keyout",
            str(acme / "key.pem"),
            "-out",
            str(acme / "csr.pem"),
        ]
    )
    (acme / "ext.cnf").write_text(f"subjectAltName=IP:{GATEWAY},DNS:localhost\n")
    run(
        [
            "openssl",
            "x509",
            "-req",
            "-days",
            "3650",
            "-in",
            str(acme / "csr.pem"),
            "-CA",
            str(acme / "ca.pem"),
            "-CAkey",
            str(acme / "ca.key"),
            "-CAcreateserial",
            "-extfile",
            str(acme / "ext.cnf"),
            "-out",
            str(acme / "cert.pem"),
        ]
    )


def lab_secrets() -> dict:
    """The lab's own secrets, made once: the broker password and a dashboard login."""
    values = {}
    if SECRETS.exists():
        for line in SECRETS.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                values[key] = value
    if "FLOWERBED_BROKER_URL" not in values:
        password = secrets.token_urlsafe(24)
        values["FLOWERBED_BROKER_URL"] = f"redis://:{password}@{GATEWAY}:{REDIS_PORT}/0"
        values["FLOWERBED_DASHBOARD_USERS"] = f"admin:{secrets.token_urlsafe(18)}"
        SECRETS.touch(mode=0o600)
        SECRETS.write_text(
            "# The lab's secrets (made by lab/lab.py up; never commit)\n"
            + "".join(f"{k}={v}\n" for k, v in values.items())
        )
    return values


def ensure_broker(broker_url: str) -> None:
    if pid_alive("redis"):
        return
    password = broker_url.split(":", 2)[2].split("@", 1)[0]
    conf = RUN / "redis.conf"
    (LAB / "redis").mkdir(exist_ok=True)
    conf.touch(mode=0o600)
    conf.write_text(
        f"bind {GATEWAY}\nport {REDIS_PORT}\nprotected-mode yes\nrequirepass {password}\n"
        f'dir {LAB / "redis"}\nsave ""\nappendonly no\ndaemonize no\n'
    )
    spawn("redis", ["redis-server", str(conf)])
    wait_for(lambda: port_open(GATEWAY, REDIS_PORT), 10, what="redis")


def ensure_worker(broker_url: str) -> None:
    env = {"CELERY_BROKER_URL": broker_url, "PYTHONPATH": str(REPO / "lab" / "demo_app")}
    celery = REPO / ".venv" / "bin" / "celery"
    python = REPO / ".venv" / "bin" / "python"
    if not celery.exists():
        raise LabError("the lab's worker needs the project venv: run `make setup` first")
    if not pid_alive("worker"):
        spawn(
            "worker",
            [
                str(celery),
                "-A",
                "flowerbed_demo.app",
                "worker",
                "-E",
                "--loglevel=INFO",
                "--concurrency=2",
                "--hostname=demo@labmachine",
            ],
            env=env,
        )
    if not pid_alive("producer"):
        spawn("producer", [str(python), "-m", "flowerbed_demo.producer"], env=env)


def port_open(address: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


# ---------------------------------------------------------------- hosts


def host_dir(name: str) -> Path:
    return HOSTS / name


def host_running(name: str) -> bool:
    return pid_alive(f"host-{name}") is not None


def prepare_host_root(host: dict) -> Path:
    """Overlay the base image and give a new host its identity, key and network."""
    d = host_dir(host["name"])
    root, upper, work = d / "root", d / "upper", d / "work"
    for path in (root, upper, work):
        path.mkdir(parents=True, exist_ok=True)
    if run(["mountpoint", "-q", str(root)], check=False).returncode != 0:
        run(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir={base_image(host['distro'])},upperdir={upper},workdir={work}",
                str(root),
            ]
        )
    if (upper / "etc" / "hostname").exists():
        return root
    (root / "etc/hostname").write_text(host["name"] + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1 localhost\n127.0.1.1 {host['fqdn']} {host['name']}\n"
    )
    (root / "etc/machine-id").write_text(run(["systemd-id128", "new"]).stdout)
    run(["ssh-keygen", "-q", "-A", "-f", str(root)])
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(f"{SSH_KEY}.pub", ssh_dir / "authorized_keys")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text(f"nameserver {GATEWAY}\n")
    (root / "etc/apt/apt.conf.d/01proxy").write_text(
        f'Acquire::http::Proxy "http://{GATEWAY}:{PROXY_PORT}";\n'
        f'Acquire::https::Proxy "http://{GATEWAY}:{PROXY_PORT}";\n'
    )
    network = root / "etc/systemd/network"
    network.mkdir(parents=True, exist_ok=True)
    (network / "10-host0.network").write_text(
        f"[Match]\nName=host0\n[Network]\nAddress={host['address']}/{NETWORK.prefixlen}\n"
        f"DNS={GATEWAY}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    return root


def boot_host(host: dict) -> None:
    name = host["name"]
    root = prepare_host_root(host)
    cgroups = host_cgroups(name)
    for cgroup in cgroups:
        if cgroup.parent.exists():
            cgroup.mkdir(exist_ok=True)
    # Own cgroup per launcher (hosts otherwise share one and see each other's processes);
    # restart on exit 133, which is how `systemctl reboot` inside a host ends nspawn.
    script = (
        'for cg in "$@"; do echo $$ > "$cg/cgroup.procs"; done\n'
        "while :; do\n"
        f"  systemd-nspawn -q -D {root} -b -M {name} --register=no --keep-unit"
        f" --network-bridge={BRIDGE} --resolv-conf=off --timezone=off --link-journal=no"
        " --console=passive </dev/null & child=$!\n"
        f"  echo $child > {RUN}/nspawn-{name}.pid\n"
        "  wait $child; rc=$?\n"
        '  [ "$rc" = 133 ] || break\n'
        "done\n"
        'echo "nspawn exited $rc"\n'
    )
    spawn(
        f"host-{name}",
        ["bash", "-c", script, "launcher", *(str(c) for c in cgroups if c.exists())],
        env={"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
    )


def ssh_command(address: str, command: list[str]) -> list[str]:
    return ["ssh", "-i", str(SSH_KEY), *SSH_OPTIONS, f"root@{address}", *command]


def ssh_ready(host: dict) -> bool:
    return run(ssh_command(host["address"], ["true"]), check=False).returncode == 0


def wait_host(host: dict, timeout: float = 90) -> None:
    def ready() -> bool:
        if not host_running(host["name"]):
            tail = (RUN / f"host-{host['name']}.log").read_text()[-800:]
            raise LabError(f"host {host['name']} stopped while booting:\n{tail}")
        return ssh_ready(host)

    wait_for(ready, timeout, what=f"ssh on {host['name']} ({host['address']})")


def forget_neighbour(address: str) -> None:
    """A new host may reuse a removed one's address: drop the old MAC from every ARP cache."""
    run(["ip", "neigh", "flush", "to", address, "dev", BRIDGE], check=False)
    for namespace in NAMESPACES:
        run(["ip", "-n", namespace, "neigh", "flush", "to", address], check=False)


def stop_host(name: str) -> None:
    nspawn = pid_alive(f"nspawn-{name}")
    if nspawn:
        # nspawn asks the host's systemd for a clean poweroff
        signal_process(nspawn, signal.SIGTERM)
        if not wait_for(lambda: pid_alive(f"nspawn-{name}") is None, 15, ignore=True):
            signal_process(nspawn, signal.SIGKILL)
    stop(f"host-{name}", timeout=5)
    (RUN / f"nspawn-{name}.pid").unlink(missing_ok=True)
    dismantle_host(name, host_dir(name) / "root")
    shutil.rmtree(host_dir(name), ignore_errors=True)


def dismantle_host(name: str, root: Path) -> None:
    """Remove what a host leaves after its nspawn: processes, veth, mount and cgroups."""
    kill_leftovers(name)
    # nspawn's end of the host's veth outlives a host whose nspawn was killed
    run(["ip", "link", "del", f"vb-{name}"], check=False)
    if run(["mountpoint", "-q", str(root)], check=False).returncode == 0:
        run(["umount", str(root)], check=False)
        if run(["mountpoint", "-q", str(root)], check=False).returncode == 0:
            run(["umount", "-l", str(root)])
    for cgroup in host_cgroups(name):
        remove_cgroup(cgroup)


def host_cgroups(name: str) -> list[Path]:
    """A host's cgroup in the cgroup v2 (unified) and v1 (name=systemd) hierarchies."""
    return [Path(f"/sys/fs/cgroup/{h}/flowerbed-lab-{name}") for h in ("unified", "systemd")]


def kill_leftovers(name: str) -> None:
    """Kill what is left in a host's cgroups: a killed nspawn leaves its host's init running."""
    for cgroup in host_cgroups(name):
        for _ in range(50):
            procs = cgroup.rglob("cgroup.procs")
            pids = [pid for listing in procs for pid in listing.read_text().split()]
            if not pids:
                break
            for pid in pids:
                signal_process(int(pid), signal.SIGKILL)
            time.sleep(0.1)


def remove_cgroup(cgroup: Path) -> None:
    if not cgroup.exists():
        return
    children = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for directory in [*children, cgroup]:
        try:
            directory.rmdir()  # cgroup directories go with their pseudo-files
        except OSError as error:
            log(f"could not remove cgroup {directory}: {error}")


# ---------------------------------------------------------------- state


def load_state() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"hosts": []}


def save_state(state: dict) -> None:
    LAB.mkdir(parents=True, exist_ok=True)
    state.update(
        {
            "ssh_key": str(SSH_KEY),
            "bridge": {"name": BRIDGE, "address": GATEWAY, "cidr": str(NETWORK)},
            "domain": DOMAIN,
            "proxy": f"http://{GATEWAY}:{PROXY_PORT}",
            "broker": {"url_env": "FLOWERBED_BROKER_URL", "address": f"{GATEWAY}:{REDIS_PORT}"},
            "secrets_file": str(SECRETS),
            "namespaces": NAMESPACES,
            "allowed_sources": ALLOWED_SOURCES,
        }
    )
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(STATE)


def new_host(name: str, distro: str, hosts: list[dict]) -> dict:
    """hN gets 10.77.0.(10+N); other names the first free address from .61 up."""
    taken = {h["address"] for h in hosts}
    preferred = [10 + int(name[1:])] if name[:1] == "h" and name[1:].isdigit() else []
    for last in [*preferred, *range(61, HOST_ADDRESSES.stop)]:
        address = str(NETWORK.network_address + last)
        if last in HOST_ADDRESSES and address not in taken:
            return {"name": name, "address": address, "fqdn": f"{name}.{DOMAIN}", "distro": distro}
    raise LabError("no free address left on the lab bridge")


def ensure_ssh_key() -> None:
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "flowerbed-lab",
                "-f",
                str(SSH_KEY),
            ]
        )


# ---------------------------------------------------------------- commands


def remove_foreign_hosts() -> set[Path]:
    """Hosts of a lab in another checkout (one a killed session left behind) share this
    machine's bridge, names and addresses: stop and unmount them. One lab per machine.
    Returns the .lab directories they belonged to."""
    foreign = set()
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        root, options = Path(fields[1]), fields[3]
        if fields[0] != "overlay" or f"lowerdir={CACHE}/base-" not in options:
            continue
        if root.parent.parent == HOSTS.resolve():  # .lab may be reached by a symlink
            continue
        name = root.parent.name
        foreign.add(root.parent.parent.parent)
        log(f"removing {name}, left by a lab in {root.parent.parent.parent}")
        dismantle_host(name, root)
    return foreign


def stop_foreign_labs() -> None:
    """A lab alive in another checkout holds this machine's ports (pebble, Redis, DNS...):
    stop its hosts and its services before this lab starts its own."""
    foreign = remove_foreign_hosts()
    if ACTIVE_LAB.is_file():
        foreign.add(Path(ACTIVE_LAB.read_text().strip()))
    foreign.discard(LAB.resolve())
    for lab_dir in sorted(foreign):
        for pid_file in sorted((lab_dir / "run").glob("*.pid")):
            stop_foreign_process(pid_file)


def stop_foreign_process(pid_file: Path) -> None:
    """Stop the process group a foreign lab's PID file names, unless the PID was reused."""
    try:
        pid = int(pid_file.read_text())
        started = process_start_time(pid)
    except (FileNotFoundError, ValueError):
        return
    if pid_gone_or_zombie(pid) or started > pid_file.stat().st_mtime + 1:
        return
    log(f"stopping {pid_file.stem} (pid {pid}), left running by a lab in {pid_file.parent.parent}")
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)
        if wait_for(lambda: pid_gone_or_zombie(pid), 10, ignore=True):
            break
    pid_file.unlink(missing_ok=True)


def process_start_time(pid: int) -> float:
    """When a process started, in seconds since the epoch (from /proc)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def ensure_services() -> dict:
    ensure_machine_packages()
    stop_foreign_labs()
    LAB.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    ACTIVE_LAB.write_text(f"{LAB.resolve()}\n")
    RUN.mkdir(parents=True, exist_ok=True)
    ensure_ssh_key()
    ensure_bridge()
    for name, address in NAMESPACES.items():
        ensure_namespace(name, address)
    ensure_proxy()
    ensure_dns()
    acme = ensure_acme()
    broker_url = lab_secrets()["FLOWERBED_BROKER_URL"]
    ensure_broker(broker_url)
    ensure_worker(broker_url)
    return acme


def ensure_hosts(wanted: list[dict], state: dict) -> None:
    """Keep healthy hosts, rebuild stale ones (e.g. left by a killed session), boot new ones."""

    def check(host: dict) -> tuple[dict, bool]:
        return host, host_running(host["name"]) and ssh_ready(host)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        healthy = {h["name"] for h, ok in pool.map(check, wanted) if ok}
        to_boot = [h for h in wanted if h["name"] not in healthy]
        for host in to_boot:
            stop_host(host["name"])
            base_image(host["distro"])
        for host in to_boot:
            boot_host(host)
        list(pool.map(wait_host, to_boot))
    known = {h["name"]: h for h in state["hosts"]}
    known.update({h["name"]: h for h in wanted})
    state["hosts"] = sorted(known.values(), key=lambda h: (len(h["name"]), h["name"]))
    for host in to_boot:
        forget_neighbour(host["address"])
    publish_dns(state["hosts"])
    write_etc_hosts(state["hosts"])
    for host in to_boot:
        log(f"{host['name']} ({host['address']}, {host['distro']}) is up")


def cmd_up(count: int, distro: str) -> None:
    t0 = time.monotonic()
    state = load_state()
    state["acme"] = ensure_services()
    by_name = {h["name"]: h for h in state["hosts"]}
    wanted = []
    for i in range(1, count + 1):
        name = f"h{i}"
        host = by_name.get(name) or new_host(name, distro, state["hosts"] + wanted)
        if host["distro"] != distro:
            stop_host(name)
            host = {**host, "distro": distro}
        wanted.append(host)
    ensure_hosts(wanted, state)
    save_state(state)
    log(f"lab up: {len(wanted)} hosts in {time.monotonic() - t0:.1f}s; state in {STATE}")


def host_name(name: str) -> str:
    """A lab host's name: a short DNS label (nspawn names its veth vb-NAME, 15 bytes at most)."""
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,11}", name):
        raise argparse.ArgumentTypeError(
            f"{name!r}: a lab host name is 1-12 lowercase letters, digits or '-', "
            "starting with a letter (e.g. f1, edge2)"
        )
    return name


def cmd_host_up(name: str, distro: str) -> None:
    state = load_state()
    state["acme"] = ensure_services()
    existing = next((h for h in state["hosts"] if h["name"] == name), None)
    if existing and existing["distro"] != distro:
        stop_host(name)
        state["hosts"].remove(existing)
        existing = None
    others = [h for h in state["hosts"] if h["name"] != name]
    ensure_hosts([existing or new_host(name, distro, others)], state)
    save_state(state)


def cmd_host_down(name: str) -> None:
    state = load_state()
    stop_host(name)
    state["hosts"] = [h for h in state["hosts"] if h["name"] != name]
    write_etc_hosts(state["hosts"])
    if STATE.exists():
        save_state(state)


def cmd_down() -> None:
    names = {h["name"] for h in load_state()["hosts"]}
    if HOSTS.exists():
        names |= {d.name for d in HOSTS.iterdir()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(stop_host, sorted(names)))
    remove_foreign_hosts()
    on_demand = ("prometheus", "blackbox", "rabbitmq-worker", "rabbitmq", "oidc")
    for service in (*on_demand, "producer", "worker", "redis", "pebble", "dns", "tinyproxy"):
        stop(service)
    for name in NAMESPACES:
        remove_namespace(name)
    run(["ip", "link", "del", BRIDGE], check=False)
    write_etc_hosts([])
    shutil.rmtree(LAB, ignore_errors=True)
    log("lab down: hosts, mounts, bridge, namespaces and processes removed")


def cmd_oidc_up() -> None:
    """The OpenID Connect provider only the OAuth tests need: started on demand, kept running."""
    from oidc_provider import ensure_oidc  # lab/oidc_provider.py

    state = load_state()
    state["oidc"] = ensure_oidc()
    save_state(state)


def cmd_ssh(name: str, command: list[str]) -> int:
    host = next((h for h in load_state()["hosts"] if h["name"] == name), None)
    if host is None:
        raise LabError(f"no lab host named {name!r}: see `lab/lab.py status`")
    return subprocess.call(ssh_command(host["address"], command))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument("--hosts", type=int, default=int(os.environ.get("HOSTS", 3)))
    up.add_argument("--distro", choices=DISTROS, default=os.environ.get("DISTRO", "bookworm"))
    host_up = sub.add_parser("host-up", help="boot one more fresh host")
    host_up.add_argument("name", type=host_name)
    host_up.add_argument("--distro", choices=DISTROS, default="bookworm")
    sub.add_parser("host-down", help="remove one host").add_argument("name")
    sub.add_parser("oidc-up", help="start the lab's OpenID Connect provider (OAuth tests)")
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("status", help="print the lab's state")
    ssh = sub.add_parser("ssh", help="run a command on a host")
    ssh.add_argument("name")
    ssh.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        print("lab: must run as root (it makes mounts, a bridge and namespaces)", file=sys.stderr)
        return 2
    try:
        return dispatch(args)
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def lab_lock():
    """One lab command at a time: tests and people share the lab and its state file."""
    LAB.mkdir(parents=True, exist_ok=True)
    with open(LAB / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "status":
        print(STATE.read_text() if STATE.exists() else "lab is down")
    elif args.command == "ssh":
        return cmd_ssh(args.name, args.cmd)
    elif args.command == "down":
        with lab_lock():
            cmd_down()
    elif args.command == "host-down":
        with lab_lock():
            cmd_host_down(args.name)
    elif args.command == "up":
        with lab_lock():
            try:
                cmd_up(args.hosts, args.distro)
            except BaseException:
                log("lab up failed: cleaning up what it made")
                cmd_down()
                raise
    elif args.command == "oidc-up":
        with lab_lock():
            cmd_oidc_up()
    elif args.command == "host-up":
        with lab_lock():
            try:
                cmd_host_up(args.name, args.distro)
            except BaseException:
                cmd_host_down(args.name)
                raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
