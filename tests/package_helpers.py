"""Building flowerbed's wheel from this checkout, as `pip wheel .` would, but elsewhere.

The checkout's files that git does not ignore (tracked or new; symlinks kept as symlinks) are
copied to a temporary directory and built there with the repo venv's setuptools, offline:

    pip wheel <copy> --no-deps --no-build-isolation --no-index

so neither ignored files (.lab/, build/, a stale egg-info) nor a build left in the checkout
can make it pass, and the checkout gets no build/ directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGED = (
    "pyproject.toml", "README.md", "LICENSE",  # the project's metadata: readme, license-files
    "flowerbed/", "templates/", "files/", "locks/", "group_data/",
)  # fmt: skip


def checkout_sources(dest: Path, prefixes: tuple[str, ...] = PACKAGED) -> Path:
    """The files the wheel is built from (or, with `prefixes=("",)`, every file git does not
    ignore: a checkout as a clone has it), copied to `dest` (symlinks as symlinks)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in (n for n in listed if n and n.startswith(prefixes)):
        source, target = REPO / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        elif source.is_file():  # a tracked file deleted in the working tree is not built
            shutil.copy2(source, target)
    return dest


def build_wheel(work: Path) -> Path:
    """flowerbed's wheel, built from a copy of the checkout under `work`."""
    sources = checkout_sources(work / "src")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(sources), "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", str(work / "dist"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (work / "dist").glob("flowerbed-*.whl")
    return wheel


def wheel_files(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def missing_from_wheel(wheel: Path) -> list[str]:
    """The package data a complete wheel holds but this one lacks: every template, host
    script, lock and module (a subpackage too: pyproject.toml lists each)."""
    modules = (REPO / "flowerbed").rglob("*.py")
    wanted = {
        *(f"flowerbed/templates/{p.name}" for p in (REPO / "templates").glob("*.j2")),
        *(f"flowerbed/files/{p.name}" for p in (REPO / "files").iterdir() if p.is_file()),
        *(f"flowerbed/locks/{p.name}" for p in (REPO / "locks").glob("flower-*")),
        *(p.relative_to(REPO).as_posix() for p in modules if "__pycache__" not in p.parts),
    }
    return sorted(wanted - set(wheel_files(wheel)))


def venv_with_repo_dependencies(venv: Path, pip: bool = False) -> tuple[Path, str]:
    """A fresh venv (with pip, or without) that finds flowerbed's dependencies (pyinfra,
    jinja2, ...) in the repo venv through a .pth file, which Python appends after the venv's
    own site-packages: no index needed. Returns its python and its site-packages."""
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    options = [] if pip else ["--without-pip"]
    subprocess.run([base_python, "-m", "venv", *options, venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "dependencies-from-repo-venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return python, site


def main(argv: list[str]) -> None:
    """`make wheel`: the wheel the tests build (build_wheel), copied to dist/ (or argv[0])."""
    import tempfile

    dist = Path(argv[0] if argv else REPO / "dist").resolve()
    dist.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flowerbed-wheel-") as work:
        wheel = build_wheel(Path(work))
        missing = missing_from_wheel(wheel)
        if missing:
            raise SystemExit(f"the wheel lacks {', '.join(missing)}")
        shutil.copy2(wheel, dist / wheel.name)
    print(dist / wheel.name)


if __name__ == "__main__":
    main(sys.argv[1:])
