"""The machine's packages and the cached read-only base images hosts boot from."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .config import BASE_PACKAGES, BASE_VERSION, CACHE, MACHINE_PACKAGES, MIRROR
from .process import log, run


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


def base_image(distro: str) -> Path:
    base = CACHE / f"base-{distro}"
    marker = base / ".flowerbed-base"
    if marker.exists() and marker.read_text().strip() == BASE_VERSION:
        return base
    log(f"building the {distro} base image (cold: about a minute)")
    build = CACHE / f"base-{distro}.build"
    shutil.rmtree(build, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    debootstrap = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
    ]
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
        ]
    )  # masking needs no unit file: a unit missing from the image is masked all the same
    run(["chroot", str(root), "apt-get", "clean"])
