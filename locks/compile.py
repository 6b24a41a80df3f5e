"""Add a Flower version, or re-resolve the locks: locks/flower-<version>.in -> .txt.

    python3 locks/compile.py 2.3.0      # a new Flower: its .in from the newest lock's, then locked
    python3 locks/compile.py 2.2.0      # re-resolve one version
    python3 locks/compile.py            # re-resolve every lock

A version with no .in yet gets one copied from the newest older version's, with that `flower==`
pin (and its comment) changed to the new version. Each lock is fully resolved and hash-pinned
for every Python the supported Debian releases ship (3.11 on Debian 12, 3.13 on Debian 13):
`--universal` keeps environment markers instead of resolving for this machine only. Hosts
install it with `pip install --require-hashes --no-deps`. Needs `uv`.

For each lock it prints what changed: against the previous version's lock (packages added,
removed, and version changes), and, for a lock that existed, against what it held before.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

LOCKS = Path(__file__).resolve().parent
OLDEST_HOST_PYTHON = "3.11"
# a pinned requirement of a lock: "name==version" then " ; marker" and/or " \"
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+?)(?:\s*;\s*(.+?))?\s*\\?$")

Pins = dict[str, tuple[str, str]]  # normalized name -> (version, environment marker)


def parse_lock(text: str) -> Pins:
    """A lock's pinned packages (hashes and comments left out)."""
    pins: Pins = {}
    for line in text.splitlines():
        if match := PINNED.match(line):
            name, _extras, version, marker = match.groups()
            pins[re.sub(r"[-_.]+", "-", name).lower()] = (version, marker or "")
    return pins


def lock_diff(old: str, new: str) -> list[str]:
    """What changed from lock text `old` to `new`, one line a package, sorted by name:
    `+ name version` added, `- name version` removed, `~ name old -> new` another version (or
    the same version under another environment marker)."""
    before, after = parse_lock(old), parse_lock(new)
    lines = []
    for name in sorted(before.keys() | after.keys()):
        if name not in before:
            lines.append(f"+ {name} {_shown(after[name])}")
        elif name not in after:
            lines.append(f"- {name} {_shown(before[name])}")
        elif before[name] != after[name]:
            lines.append(f"~ {name} {_shown(before[name])} -> {_shown(after[name])}")
    return lines


def _shown(pin: tuple[str, str]) -> str:
    version, marker = pin
    return f"{version} ; {marker}" if marker else version


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def lock_versions(locks: Path = LOCKS) -> list[str]:
    """The versions with a lock source, oldest first."""
    found = [path.stem.removeprefix("flower-") for path in locks.glob("flower-*.in")]
    return sorted(found, key=_release)


def previous_version(version: str, locks: Path = LOCKS) -> str | None:
    """The newest version older than `version` that has a lock."""
    older = [v for v in lock_versions(locks) if _release(v) < _release(version)]
    has_lock = [v for v in older if (locks / f"flower-{v}.txt").exists()]
    return has_lock[-1] if has_lock else None


def new_source(previous_source: str, previous: str, version: str) -> str:
    """The .in of `version`: the previous version's, its Flower pin (and mentions) changed."""
    if not re.search(rf"^flower=={re.escape(previous)}$", previous_source, re.M):
        raise SystemExit(f"flower-{previous}.in does not pin flower=={previous}: write it by hand")
    return re.sub(rf"\b(flower==|Flower ){re.escape(previous)}\b", rf"\g<1>{version}",
                  previous_source)  # fmt: skip


def compile_lock(source: Path) -> None:
    version = source.stem.removeprefix("flower-")
    command = [
        "uv", "pip", "compile", "--quiet", "--universal", "--generate-hashes",
        "--python-version", OLDEST_HOST_PYTHON,
        "--custom-compile-command", f"python3 locks/compile.py {version}",
        str(source), "--output-file", str(source.with_suffix(".txt")),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def report(title: str, lines: list[str]) -> str:
    if not lines:
        return f"{title}: no change"
    counts = {sign: sum(line.startswith(sign) for line in lines) for sign in "+-~"}
    summary = f"{counts['+']} added, {counts['-']} removed, {counts['~']} changed"
    return "\n".join([f"{title}: {summary}", *(f"    {line}" for line in lines)])


def lock_version(version: str, locks: Path = LOCKS, compile_lock=compile_lock) -> str:
    """Lock `version` (its .in written first if it has none); what changed, as text."""
    source, lock = locks / f"flower-{version}.in", locks / f"flower-{version}.txt"
    previous = previous_version(version, locks)
    if not source.exists():
        if previous is None:
            raise SystemExit(f"no older lock to start {source.name} from: write it by hand")
        before = (locks / f"flower-{previous}.in").read_text()
        source.write_text(new_source(before, previous, version))
        print(f"wrote {source.name} from flower-{previous}.in")
    old = lock.read_text() if lock.exists() else None
    compile_lock(source)
    new = lock.read_text()
    reports = [f"locked {lock.name}"]
    if previous is not None:
        against = (locks / f"flower-{previous}.txt").read_text()
        reports.append(report(f"against flower-{previous}.txt", lock_diff(against, new)))
    if old is not None:
        reports.append(report(f"against the {lock.name} it replaces", lock_diff(old, new)))
    return "\n".join(reports)


def main(versions: list[str]) -> None:
    if any(not re.fullmatch(r"\d+(\.\d+)*", version) for version in versions):
        raise SystemExit(__doc__)
    for version in versions or lock_versions():
        print(lock_version(version))


if __name__ == "__main__":
    main(sys.argv[1:])
