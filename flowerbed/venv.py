"""Venvs built from a hash-pinned lock file, one directory per (lock, app) pair.

A venv is built beside the running one (`<venvs>/<key>`) and marked complete only after every
step succeeded; the service's venv link is switched afterwards. So a failed or interrupted
install never leaves a half-installed venv in use, is retried on the next run, and a changed
lock or app is exactly one new venv, one link switch and one restart.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from . import facts
from .hostfiles import Link, PathStates, RootDirectory, entry_commands
from .shell import all_of, command

COMPLETE_MARKER = ".flowerbed-complete"
SKIPPED_IN_APP_ARCHIVE = {"__pycache__", ".git", "build", "dist", ".venv", ".pytest_cache"}


@dataclass(frozen=True)
class AppPackage:
    """The user's Celery app: a pip requirement (spec or git URL) or a local source tree."""

    requirement: str
    archive: bytes | None = field(default=None, repr=False)

    @property
    def identity(self) -> bytes:
        return self.archive if self.archive is not None else self.requirement.encode()


def app_from_source(source: str, local_dir: Path | None) -> AppPackage:
    if local_dir is None:
        return AppPackage(requirement=source)
    return AppPackage(requirement=source, archive=source_archive(local_dir))


def source_archive(directory: Path) -> bytes:
    """A tar of a source tree that is byte-identical for identical files (no times, owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(_source_files(directory)):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(directory)))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if info.mode & 0o111 else 0o644
            with path.open("rb") as content:
                tar.addfile(info, content)
    return buffer.getvalue()


def _source_files(directory: Path):
    for path in directory.rglob("*"):
        parts = path.relative_to(directory).parts
        skipped = any(p in SKIPPED_IN_APP_ARCHIVE or p.endswith(".egg-info") for p in parts)
        if path.is_file() and not skipped and path.suffix not in (".pyc", ".pyo"):
            yield path


def venv_key(lock: bytes, app: AppPackage | None) -> str:
    digest = hashlib.sha256(lock)
    if app:
        digest.update(b"\0app\0" + app.identity)
    return digest.hexdigest()[:16]


class VenvComplete(FactBase):
    """True when the venv at `path` finished building and its Python still runs Flower."""

    def command(self, path: str) -> StringCommand:
        check = all_of(
            ["test", "-f", f"{path}/{COMPLETE_MARKER}"],
            [f"{path}/bin/python", "-I", "-c", "import flower"],
        )
        # a Python upgraded under the venv (Debian 12 -> 13) fails the import: rebuild
        return StringCommand(check, "2>/dev/null", "&&", "echo", "complete", "||", "true")

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return output == ["complete"]


class Subdirectories(FactBase):
    """Names of the directories directly inside `path` (none if it does not exist)."""

    def command(self, path: str) -> StringCommand:
        listing = all_of(
            ["test", "-d", path],
            ["find", path, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-printf", "%f\\n"],
        )
        return StringCommand(listing, "||", "true")

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line for line in output if line]


def linked_venv(name: str, venvs_dir: str, key: str, link: str, **venv) -> OperationMeta:
    """`venvs_dir/key` holds exactly the lock's packages (and the app), and `link` points at it:
    locked_venv (`venv`: its lock, pip_conf, app, proxy), checked with the host's other facts;
    the link is switched only once the venv is complete."""
    path = f"{venvs_dir}/{key}"
    facts.expect(VenvComplete, path=path)
    facts.expect(PathStates, paths=(venvs_dir, link))
    return locked_venv(name=name, venvs_dir=venvs_dir, path=path, link=link, **venv)


@operation()
def locked_venv(
    venvs_dir: str,
    path: str,
    link: str,
    lock: bytes,
    pip_conf: str,
    app: AppPackage | None = None,
    proxy: str = "",
):
    """The venv at `path` holds exactly the lock's packages (and the app), verified by pip;
    `link` points at it; `venvs_dir` is root's."""
    complete = facts.ask(VenvComplete, path=path)
    current = facts.ask(PathStates, paths=(venvs_dir, link))
    commands = [
        *entry_commands(RootDirectory(venvs_dir), current.get(venvs_dir)),
        *([] if complete else _build(path, lock, pip_conf, app, proxy)),
        *entry_commands(Link(link, path), current.get(link)),
    ]
    if not commands:
        host.noop(f"venv {path} is complete and {link} points at it")
    yield from commands


def _build(path: str, lock: bytes, pip_conf: str, app: AppPackage | None, proxy: str):
    pip = [f"{path}/bin/python", "-m", "pip"]
    lock_file = f"{path}/requirements.lock"
    yield command("rm", "-rf", path)
    yield command("python3", "-m", "venv", path)
    yield FileUploadCommand(StringIO(pip_conf), f"{path}/pip.conf")
    yield FileUploadCommand(BytesIO(lock), lock_file)
    yield command(*pip, "install", "--require-hashes", "--no-deps", "--only-binary=:all:",
                  "--requirement", lock_file)  # fmt: skip
    if app:
        yield from _install_app(path, pip, app, proxy)
    yield command(*pip, "check")
    yield command("touch", f"{path}/{COMPLETE_MARKER}")


def _install_app(path: str, pip: list[str], app: AppPackage, proxy: str):
    if app.archive is None:
        # pip's config does not reach the git it runs for git+ URLs: the environment does
        environment = [f"https_proxy={proxy}", f"http_proxy={proxy}"] if proxy else []
        yield command("env", *environment, *pip, "install", "--no-deps", app.requirement)
        return
    archive, source = f"{path}/app-source.tar", f"{path}/app-source"
    yield FileUploadCommand(BytesIO(app.archive), archive)
    yield command("mkdir", "-p", source)
    yield command("tar", "-xf", archive, "-C", source, "--no-same-owner")
    yield command(*pip, "install", "--no-deps", source)
    yield command("rm", "-rf", archive, source)


def only_the_venv(name: str, venvs_dir: str, keep: str) -> OperationMeta:
    facts.expect(Subdirectories, path=venvs_dir)
    return only_venv(name=name, venvs_dir=venvs_dir, keep=keep)


@operation()
def only_venv(venvs_dir: str, keep: str):
    """`venvs_dir` holds no venv but `keep` (the one the service runs)."""
    stale = [name for name in facts.ask(Subdirectories, path=venvs_dir) if name != keep]
    if not stale:
        host.noop(f"no stale venvs in {venvs_dir}")
    for name in sorted(stale):
        yield command("rm", "-rf", f"{venvs_dir}/{name}")
