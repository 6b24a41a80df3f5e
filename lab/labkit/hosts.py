"""Hosts: an overlay over a base image, booted by systemd-nspawn in its own cgroup, reached
by ssh."""

from __future__ import annotations

import concurrent.futures
import shutil
import signal
import time
from pathlib import Path

from .config import (
    BRIDGE,
    DOMAIN,
    GATEWAY,
    HOST_ADDRESSES,
    HOSTS,
    NETWORK,
    PROXY_PORT,
    RUN,
    SSH_KEY,
    SSH_OPTIONS,
)
from .image import base_image
from .network import delete_link, forget_neighbour, write_etc_hosts
from .process import (
    LabError,
    log,
    pid_alive,
    run,
    signal_process,
    spawn,
    stop,
    wait_for,
)
from .services import publish_dns

# Each host's systemd takes inotify instances (about 5; root's, like the machine's own): Debian's
# default of 128 stops a host's boot ("Too many open files") at about the 26th. Raised, never
# lowered, before any host boots.
INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_INSTANCES_WANTED = 1024


def ensure_inotify_instances() -> None:
    if int(INOTIFY_INSTANCES.read_text()) < INOTIFY_INSTANCES_WANTED:
        INOTIFY_INSTANCES.write_text(f"{INOTIFY_INSTANCES_WANTED}\n")


def new_host(name: str, distro: str, hosts: list[dict]) -> dict:
    """hN gets 10.77.0.(10+N); other names the first free address from .61 up."""
    taken = {h["address"] for h in hosts}
    preferred = [10 + int(name[1:])] if name[:1] == "h" and name[1:].isdigit() else []
    for last in [*preferred, *range(61, HOST_ADDRESSES.stop)]:
        address = str(NETWORK.network_address + last)
        if last in HOST_ADDRESSES and address not in taken:
            return {
                "name": name,
                "address": address,
                "fqdn": f"{name}.{DOMAIN}",
                "distro": distro,
            }
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
    # dpkg without an fsync per file: a lab host is thrown away, never recovered after a crash,
    # and Debian 12's npm (363 packages) took 233 s to install with them, 90 s without
    (root / "etc/dpkg/dpkg.cfg.d/lab-unsafe-io").write_text("force-unsafe-io\n")
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
    # restart on exit 133, which is how `systemctl reboot` inside a host ends nspawn. The
    # keyring and bpf system calls, which nspawn filters by default, are a real host's:
    # Docker's runc makes a session keyring and a device filter (cgroup BPF) per container.
    script = (
        'for cg in "$@"; do echo $$ > "$cg/cgroup.procs"; done\n'
        "while :; do\n"
        f"  systemd-nspawn -q -D {root} -b -M {name} --register=no --keep-unit"
        f" --network-bridge={BRIDGE} --resolv-conf=off --timezone=off --link-journal=no"
        " --console=passive --system-call-filter='@keyring bpf' </dev/null & child=$!\n"
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
    delete_link(f"vb-{name}")
    mounted = run(["mountpoint", "-q", str(root)], check=False).returncode == 0
    if mounted and run(["umount", str(root)], check=False).returncode != 0:
        run(["umount", "-l", str(root)])  # busy: detached now, freed when the last user goes
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
