"""Root-owned files, directories and links: the one helper for the files flowerbed puts on hosts.

    config = root_files(
        name="Flower's options (flowerconfig.py) and unit",
        entries=[
            RootDirectory("/etc/flower"),
            RootFile("/etc/flower/flowerconfig.py", text),
            RootFile(UNIT_FILE, unit_text),
        ],
    )
    systemd.daemon_reload(name="Reload systemd (Flower's unit changed)", _if=changed(UNIT_FILE))

One operation checks all its entries against one fact (`PathStates`: type, mode, owner and the
sha256 of each path), fetched with the host's other facts (flowerbed.facts). A file is uploaded
only when its content differs, and `--dry --diff` shows each such file's diff as `files.put`
does. `changed(path, ...)` tells an `_if` whether this run changed one of those paths, so a
handler restarts or reloads for exactly the paths it depends on. Secrets never go through here
(flowerbed.secrets.secret_file: no digest, no diff).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO, StringIO
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FactBase, FileUploadCommand, OperationError, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents

from . import facts
from .pyinfra_internals import bold, diff_lines
from .shell import command


@dataclass(frozen=True)
class PathState:
    kind: str  # find's %y: f (file), d (directory), l (link), ...
    mode: int
    user: str
    group: str
    target: str = ""  # a link's
    sha256: str = ""  # a file's


class PathStates(FactBase):
    """{path: PathState} for those of `paths` that exist (links are not followed); files' sha256
    unless `digests` is False (a secret's digest lets anyone guess it offline, and pyinfra
    prints facts at -vvv)."""

    merge_argument = "paths"  # with others of its kind, one command (flowerbed.facts)

    def command(self, paths: tuple[str, ...], digests: bool = True) -> StringCommand:
        listing = [
            "find",
            *paths,
            "-maxdepth",
            "0",
            "-printf",
            "S\\t%y\\t%m\\t%u\\t%g\\t%l\\t%p\\n",
        ]
        if digests:
            listing += ["-type", "f", "-exec", "sha256sum", "{}", "+"]
        return StringCommand(command(*listing), "2>/dev/null", "||", "true")

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict[str, PathState]:
        found, digests = {}, {}
        for line in output:
            if line.startswith("S\t"):
                _, kind, mode, user, group, target, path = line.split("\t", 6)
                found[path] = PathState(kind, int(mode, 8), user, group, target)
            elif "  " in line:
                digest, _, path = line.partition("  ")
                digests[path] = digest
        return {
            path: PathState(**{**found_state.__dict__, "sha256": digests.get(path, "")})
            for path, found_state in found.items()
        }


# --- what a host should have ------------------------------------------------------------------


@dataclass(frozen=True)
class RootDirectory:
    path: str
    mode: str = "755"
    group: str = "root"


@dataclass(frozen=True)
class RootFile:
    """A file owned by root (and `group`): `content` is the text, or a local file's Path."""

    path: str
    content: str | Path = field(repr=False)
    mode: str = "644"
    group: str = "root"

    @property
    def data(self) -> bytes:
        return (
            self.content.read_bytes() if isinstance(self.content, Path) else self.content.encode()
        )


@dataclass(frozen=True)
class Link:
    path: str
    target: str


@dataclass(frozen=True)
class Absent:
    """No file or link at `path`."""

    path: str


Entry = RootDirectory | RootFile | Link | Absent


def root_files(name: str, entries: Sequence[Entry], **arguments) -> OperationMeta:
    """One operation: every entry as it should be, checked against one fact."""
    paths = tuple(entry.path for entry in entries)
    facts.expect(PathStates, paths=paths)
    return host_files(name=name, entries=tuple(entries), **arguments)


def root_file(name: str, src: str | Path | StringIO, dest: str, mode: str = "644") -> OperationMeta:
    """`dest` holds `src` (as files.put takes it: a local file's path, or a StringIO), owned by
    root."""
    content = src.getvalue() if isinstance(src, StringIO) else Path(src)
    return root_files(name, [RootFile(dest, content, mode)])


def root_directory(name: str, path: str, mode: str = "755") -> OperationMeta:
    """`path` is a directory owned by root."""
    return root_files(name, [RootDirectory(path, mode)])


@operation()
def host_files(entries: tuple[Entry, ...]):
    """Each entry's path is as described: content, mode and owner, link target, or absent."""
    current = facts.ask(PathStates, paths=tuple(entry.path for entry in entries))
    unchanged = True
    for entry in entries:
        commands = list(entry_commands(entry, current.get(entry.path)))
        if commands:
            unchanged = False
            if state.is_executing:
                _changed_paths().add(entry.path)
            yield from commands
    if unchanged:
        host.noop(f"{', '.join(e.path for e in entries)}: as they should be")


def entry_commands(entry: Entry, current: PathState | None) -> Iterator:
    if isinstance(entry, RootFile):
        yield from file_commands(entry, current)
    elif isinstance(entry, RootDirectory):
        yield from directory_commands(entry, current)
    elif isinstance(entry, Link):
        if current and current.kind not in ("l", "f"):
            raise OperationError(f"{entry.path} exists and is not a link")
        if not current or current.kind != "l" or current.target != entry.target:
            _preview(f"Will point {entry.path} at {entry.target}")
            yield command("ln", "-sfn", entry.target, entry.path)
    elif current:
        if current.kind == "d":
            raise OperationError(f"{entry.path} is a directory, not a file to remove")
        _preview(f"Will remove {entry.path}")
        yield command("rm", "-f", entry.path)


def directory_commands(entry: RootDirectory, current: PathState | None) -> Iterator:
    if current and current.kind != "d":
        raise OperationError(f"{entry.path} exists and is not a directory")
    if not current:
        yield command("mkdir", "-p", entry.path)
    yield from owner_commands(entry.path, entry.mode, entry.group, current)


def file_commands(entry: RootFile, current: PathState | None) -> Iterator:
    if current and current.kind != "f":
        raise OperationError(f"{entry.path} exists and is not a regular file")
    data = entry.data
    if not current or current.sha256 != hashlib.sha256(data).hexdigest():
        _preview_diff(entry.path, data, exists=current is not None)
        if not current:
            yield command("mkdir", "-p", posixpath.dirname(entry.path))
        temp = host.get_temp_filename(entry.path)
        yield FileUploadCommand(BytesIO(data), entry.path, remote_temp_filename=temp)
        current = None  # a new file: set its owner and mode
    yield from owner_commands(entry.path, entry.mode, entry.group, current)


def owner_commands(path: str, mode: str, group: str, current: PathState | None) -> Iterator:
    if not current or (current.user, current.group) != ("root", group):
        if current:
            _preview(f"Will change {path}'s owner {current.user}:{current.group} -> root:{group}")
        yield command("chown", f"root:{group}", path)
    if not current or current.mode != int(mode, 8):
        if current:
            _preview(f"Will change {path}'s mode {current.mode:o} -> {mode}")
        yield command("chmod", mode, path)


def _preview(message: str) -> None:
    if state.config.DIFF and not state.is_executing:
        host.log(message, logger.info)


def _preview_diff(path: str, data: bytes, exists: bool) -> None:
    """`--diff`: the file's diff, as files.put shows it (only for a file that differs)."""
    if not state.config.DIFF or state.is_executing:
        return
    host.log(f"Will {'modify' if exists else 'create'} {bold(path)}", logger.info)
    try:
        desired = data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        logger.info("Binary file uploaded")
        return
    current = host.get_fact(FileContents, path=path) if exists else []
    for line in diff_lines([f"{line}\n" for line in current or []], desired):
        logger.info("  %s", line)
    logger.info("")


# --- what changed this run ------------------------------------------------------------------

_changed: dict[tuple[int, str], set[str]] = {}


def _changed_paths() -> set[str]:
    return _changed.setdefault((id(state), host.name), set())


def mark_changed(*paths: str) -> None:
    """An operation other than root_files changed `paths` in this run (for `changed`)."""
    _changed_paths().update(paths)


def changed(*paths: str) -> Callable[[], bool]:
    """For `_if`: whether this run changed any of `paths` on the host (through root_files)."""
    return lambda: not _changed_paths().isdisjoint(paths)
