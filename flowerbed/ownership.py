"""Flower's names decided from the host, not from a list of names (issue 19).

Flower's user, group, unit and directories (`Flower.names()`) are flowerbed's to create or use
only when the host says so. One fact, `HostNames`, fetched in the deploy's one round trip,
reads:
- Flower's user, and its group with the members;
- every unit file of flower_service in the five unit directories, and what systemd loads under
  that name (an alias such as sshd.service is another unit's). A unit file is read past its
  first line only when that line is flowerbed's header, and even then only the fields that name
  things are printed: a hand-made unit with a password in ExecStart is never printed, -vvv
  included;
- Flower's config, venv, state and socket directories, the app's working directory, and every
  directory above them: type, owner, mode, and whether they hold anything;
- flowerbed's record, RECORD.

Flowerbed's are: a name the record lists; an account with flowerbed's GECOS mark
(flower.CREATED); a unit with flowerbed's header and description, and, on a host deployed
before the record, what that unit names. Anything else that exists is refused for that host
before any change, every name in one message with whose it is and the fix: another name, or
`flower_names_claimed = ["user:NAME", ...]`. A directory that is not flowerbed's passes only if
it is an empty real directory of root's that no one else can write to (it is then recorded as
adopted); any directory is refused under a parent another account can write to, and no claim
overrides that, nor a symlink, nor root's uid or gid.

The record is written first, before anything is created: `created` for what flowerbed makes
(or made), `adopted` for what it was handed. remove.py (flowerbed/remove.py) deletes only what
the record lists as created. Another part that takes over a Flower (issue 21) passes the names
it hands over as `extra_created`: they pass the check and are recorded as created.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from . import facts
from .flower import CREATED, CREATED_WITH_GROUP
from .packages import INSTALLED_RECORD_DIR
from .resources import TEMPLATES
from .settings import Flower
from .shell import command, refused

RECORD = f"{INSTALLED_RECORD_DIR}/claimed"
# systemd's unit directories, in its order of precedence (generated units: systemctl show)
UNIT_DIRS = (
    "/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system", "/lib/systemd/system",
)  # fmt: skip
HEADER = (TEMPLATES / "flower.service.j2").read_text().splitlines()[0]
DESCRIPTION = "Celery Flower dashboard"
# what the fact prints of flowerbed's own unit: the fields that name things (ExecStart's
# program and --conf= come separately), never the rest of a command line
NAMING_FIELDS = (
    "Description", "User", "Group", "WorkingDirectory", "StateDirectory", "RuntimeDirectory",
    "EnvironmentFile",
)  # fmt: skip
CREATED_STATE, ADOPTED = "created", "adopted"
KEY_CLAIMS = "flower_names_claimed"


# --- the fact -----------------------------------------------------------------------------


def parents(paths: Iterable[str]) -> tuple[str, ...]:
    """Every directory above `paths`, `/` included."""
    found: dict[str, None] = {}
    for path in paths:
        while path not in ("/", ""):
            path = posixpath.dirname(path)
            found.setdefault(path)
    return tuple(found)


def names_script(user: str, group: str, unit: str, dirs: tuple[str, ...],
                 unit_dirs: tuple[str, ...], record: str) -> str:  # fmt: skip
    """The fact's shell script: one tagged line per thing found (see HostNames.process)."""
    q = shlex.quote
    unit_files = " ".join(q(f"{d}/{unit}.service") for d in unit_dirs)
    fields = "|".join(NAMING_FIELDS)
    awk_fields = (
        f'$1 ~ /^({fields})$/ {{ print "unitfield\\t" f "\\t" $1 "\\t"'
        " substr($0, length($1) + 2) }"
        ' $1 == "ExecStart" { n = split(substr($0, 11), w, " "); print "unitfield\\t" f'
        ' "\\tExecStart\\t" w[1]; for (i = 2; i <= n; i++) if (w[i] ~ /^--conf=/)'
        ' print "unitfield\\t" f "\\tConf\\t" substr(w[i], 8) }'
    )
    listed = " ".join(q(d) for d in (*dirs, *parents(dirs)))
    return "\n".join(
        (
            "T=$(printf '\\t')",
            f'getent passwd {q(user)} | sed "s/^/user$T/"',
            f'getent group {q(group)} | sed "s/^/group$T/"',
            f"for f in {unit_files}; do",
            '  [ -e "$f" ] || [ -L "$f" ] || continue',
            '  kind=file; [ -L "$f" ] && kind=link; [ -f "$f" ] || kind=other',
            "  mine=no",
            # the first line only: a unit that is not flowerbed's is read no further
            '  if [ "$kind" = file ] && IFS= read -r first < "$f" &&'
            f' [ "$first" = {q(HEADER)} ]; then',
            "    mine=yes",
            "  fi",
            '  printf "unitfile\\t%s\\t%s\\t%s\\n" "$f" "$kind" "$mine"',
            f'  if [ "$mine" = yes ]; then awk -F= -v f="$f" {q(awk_fields)} "$f"; fi',
            "done",
            "if command -v systemctl >/dev/null 2>&1; then",
            f"  systemctl show --property=Id,LoadState,FragmentPath {q(unit + '.service')}"
            ' 2>/dev/null | sed "s/^/loaded$T/"',
            "fi",
            f"find {listed} -maxdepth 0 -printf 'dir\\t%p\\t%y\\t%u\\t%g\\t%m\\n' 2>/dev/null",
            f"for d in {' '.join(q(d) for d in dirs)}; do",
            '  if [ -d "$d" ] && [ ! -L "$d" ] && [ -n "$(find "$d" -mindepth 1 -maxdepth 1 -print'
            ' -quit 2>/dev/null)" ]; then printf "full\\t%s\\n" "$d"; fi',
            "done",
            f'if [ -f {q(record)} ]; then echo record-exists; sed "s/^/record$T/" {q(record)}; fi',
            "true",
        )
    )


@dataclass(frozen=True)
class Directory:
    kind: str  # find's %y: d, l, f...
    user: str
    group: str
    mode: int

    @property
    def others_write(self) -> bool:
        """Another account than root can write in it (a group other than root's, or anyone)."""
        return bool(self.mode & 0o002) or bool(self.mode & 0o020) and self.group != "root"

    def __str__(self) -> str:
        return f"{self.user}:{self.group} {self.mode:o}"


class HostNames(FactBase):
    """What the host has under Flower's names (the module's docstring): {"users", "groups",
    "unit_files", "loaded", "dirs", "full", "record"}."""

    def command(
        self,
        user: str,
        group: str,
        unit: str,
        dirs: tuple[str, ...],
        unit_dirs: tuple[str, ...] = UNIT_DIRS,
        record: str = RECORD,
    ) -> StringCommand:
        script = names_script(user, group, unit, dirs, unit_dirs, record)
        return StringCommand("sh", "-c", shlex.quote(script))

    @staticmethod
    def default() -> dict:
        return {"users": {}, "groups": {}, "unit_files": {}, "loaded": {}, "dirs": {},
                "full": set(), "record": None}  # fmt: skip

    def process(self, output: list[str]) -> dict:
        found = self.default()
        for line in output:
            tag, _, rest = line.partition("\t")
            parts = rest.split("\t")
            if tag == "user" and len(rest.split(":")) == 7:
                found["users"][rest.split(":")[0]] = rest.split(":")
            elif tag == "group" and len(rest.split(":")) == 4:
                found["groups"][rest.split(":")[0]] = rest.split(":")
            elif tag == "unitfile" and len(parts) == 3:
                found["unit_files"][parts[0]] = {"kind": parts[1], "mine": parts[2] == "yes",
                                                 "fields": []}  # fmt: skip
            elif tag == "unitfield" and len(parts) == 3 and parts[0] in found["unit_files"]:
                found["unit_files"][parts[0]]["fields"].append((parts[1], parts[2]))
            elif tag == "loaded" and "=" in rest:
                name, _, value = rest.partition("=")
                found["loaded"][name] = value
            elif tag == "dir" and len(parts) == 5:
                path, kind, user, group, mode = parts
                found["dirs"][path] = Directory(kind, user, group, int(mode, 8))
            elif tag == "full":
                found["full"].add(rest)
            elif tag == "record-exists":
                found["record"] = found["record"] or []
            elif tag == "record" and found["record"] is not None:
                found["record"].append(rest.strip())
        return found


def fact_arguments(flower: Flower) -> dict:
    dirs = tuple(name for kind, name, _ in flower.names() if kind == "dir")
    return {"user": flower.user, "group": flower.group, "unit": flower.service, "dirs": dirs}


# --- the decision -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    refused: tuple[str, ...]  # one sentence per refused name
    claimable: tuple[str, ...]  # the claims that would let those through
    keys: tuple[str, ...]  # the keys that choose the refused names
    record: tuple[str, ...]  # the record's lines after this run

    def message(self) -> str:
        fix = f"set {', '.join(self.keys)} to names this host does not use"
        if self.claimable:
            listed = ", ".join(f'"{claim}"' for claim in self.claimable)
            fix += f", or hand them to Flower: {KEY_CLAIMS} = [{listed}]"
        return (
            "flowerbed refuses names on this host that it did not create; nothing was changed: "
            + "; ".join(self.refused)
            + f". Fix: {fix}"
        )


def recorded(found: dict) -> dict[str, str]:
    """The record's claims -> created/adopted."""
    lines = (line.split(" ", 1) for line in found["record"] or [])
    return {claim: state for state, claim in (p for p in lines if len(p) == 2)}


def record_lines(entries: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(f"{state} {claim}" for claim, state in entries.items()))


def flowerbeds_unit(unit_file: dict) -> bool:
    """A unit file with flowerbed's header and description."""
    return unit_file["mine"] and dict(unit_file["fields"]).get("Description") == DESCRIPTION


def named_by_units(found: dict) -> set[str]:
    """What flowerbed's own unit files name (for a host deployed before the record)."""
    names = set()
    for unit in found["unit_files"].values():
        if not flowerbeds_unit(unit):
            continue
        fields = dict(unit["fields"])
        names |= {f"user:{fields[k]}" for k in ("User",) if k in fields}
        names |= {f"group:{fields[k]}" for k in ("Group",) if k in fields}
        for field, value in unit["fields"]:
            if field == "Conf":
                names.add(f"dir:{posixpath.dirname(value)}")
            elif field == "ExecStart" and value.endswith("/venv/bin/celery"):
                names.add(f"dir:{value.removesuffix('/venv/bin/celery')}")
            elif field == "StateDirectory":
                names.add(f"dir:/var/lib/{value}")
            elif field == "RuntimeDirectory":
                names.add(f"dir:/run/{value}")
            elif field == "WorkingDirectory":
                names.add(f"dir:{value}")
    return names


def unit_problem(found: dict, unit: str) -> str | None:
    """Why `unit` (its files, what systemd loads) is not flowerbed's; None if absent or its."""
    files = found["unit_files"]
    foreign = [path for path, unit_file in files.items() if not flowerbeds_unit(unit_file)]
    loaded = found["loaded"]
    if loaded.get("Id") and loaded["Id"] != f"{unit}.service":
        return f"systemd loads it as {loaded['Id']} (an alias of another unit)"
    if foreign:
        return f"{', '.join(foreign)} was not written by flowerbed"
    fragment = loaded.get("FragmentPath", "")
    if loaded.get("LoadState") not in (None, "", "not-found") and fragment not in files:
        return f"systemd loads it from {fragment or 'elsewhere'} ({loaded.get('LoadState')})"
    return None


def user_problem(found: dict, user: str) -> str | None:
    entry = found["users"].get(user)
    if entry is None or entry[4] in (CREATED, CREATED_WITH_GROUP):
        return None
    return f"an account of this host (uid {entry[2]}, home {entry[5]}, shell {entry[6]})"


def group_problem(found: dict, group: str) -> str | None:
    entry = found["groups"].get(group)
    if entry is None:
        return None
    primary = [u for u, e in found["users"].items() if e[3] == entry[2]]
    if any(found["users"][u][4] == CREATED_WITH_GROUP for u in primary):
        return None
    whose = f"gid {entry[2]}"
    if primary:
        whose += f", the primary group of {', '.join(primary)}"
    if entry[3]:
        whose += f", members {entry[3]}"
    return f"a group of this host ({whose})"


def dir_problem(found: dict, path: str) -> str | None:
    """Why an existing directory that is not flowerbed's cannot pass unclaimed."""
    current = found["dirs"].get(path)
    if current is None:
        return None
    if current.kind != "d":
        return "a symlink" if current.kind == "l" else "not a directory"
    reasons = []
    if path in found["full"]:
        reasons.append("holds files")
    if current.user != "root":
        reasons.append(f"belongs to {current.user}")
    if current.others_write:
        reasons.append("others can write to it")
    return f"{', '.join(reasons)} ({current})" if reasons else None


def never_claimable(found: dict, kind: str, name: str) -> str | None:
    """What no claim lets through: root's ids, a symlink or non-directory, a parent another
    account can write to, an app directory that does not exist (flowerbed only reads it)."""
    if kind == "user" and found["users"].get(name, [""] * 7)[2] == "0":
        return "root's uid 0"
    if kind == "group" and found["groups"].get(name, [""] * 4)[2] == "0":
        return "root's gid 0"
    if kind != "dir":
        return None
    current = found["dirs"].get(name)
    if current is not None and current.kind != "d":
        return "a symlink" if current.kind == "l" else "not a directory"
    for parent in parents([name]):
        above = found["dirs"].get(parent)
        if above is not None and (above.kind != "d" or above.user != "root" or above.others_write):
            link = ", a symlink" if above.kind == "l" else ""
            return f"under {parent} ({above}{link}), which another account can write to or replace"
    return None


def problem(found: dict, kind: str, name: str) -> str | None:
    if kind == "user":
        return user_problem(found, name)
    if kind == "group":
        return group_problem(found, name)
    if kind == "unit":
        return unit_problem(found, name)
    return dir_problem(found, name)


def exists(found: dict, kind: str, name: str) -> bool:
    if kind == "unit":
        return bool(found["unit_files"]) or found["loaded"].get("LoadState") not in (
            None, "", "not-found")  # fmt: skip
    table = {"user": "users", "group": "groups", "dir": "dirs"}[kind]
    return name in found[table]


KIND_WORDS = {"user": "user", "group": "group", "unit": "unit", "dir": "directory"}


def decide(flower: Flower, found: dict, extra_created: Collection[str] = ()) -> Verdict:
    """Each of Flower's names: flowerbed's, free (created), handed over (claimed or
    extra_created), or refused; and the record after this run."""
    entries = recorded(found)
    ours = named_by_units(found) if found["record"] is None else set()
    claims = set(flower.names_claimed)
    refusals, claimable, keys = [], [], []
    for kind, name, key in flower.names():
        claim = f"{kind}:{name}"
        label = f"{KIND_WORDS[kind]} {name}{'.service' if kind == 'unit' else ''} ({key})"
        if blocked := never_claimable(found, kind, name):
            refusals.append(f"{label}: {blocked}, which no claim lets through")
            keys.append(key)
            continue
        if claim in entries:
            continue
        why = problem(found, kind, name)
        present = exists(found, kind, name)
        if key == "flower_app_workdir" and not present:
            refusals.append(f"{label}: does not exist; flowerbed only reads the app's directory")
            keys.append(key)
            continue
        marked = present and why is None and kind != "dir"  # GECOS mark, unit header
        if claim in extra_created or claim in ours or marked or not present:
            entries[claim] = CREATED_STATE
        elif claim in claims or why is None:
            entries[claim] = ADOPTED
        else:
            refusals.append(f"{label} is not flowerbed's: {why}")
            claimable.append(claim)
            keys.append(key)
    for claim in extra_created:  # even over an adopted line: flowerbed's now, removed with it
        entries[claim] = CREATED_STATE
    return Verdict(tuple(refusals), tuple(claimable), tuple(dict.fromkeys(keys)),
                   record_lines(entries))  # fmt: skip


# --- the operation --------------------------------------------------------------------------


def record_commands(lines: tuple[str, ...]) -> list[StringCommand]:
    """The record written whole, atomically (a new file renamed over the old one)."""
    temp = f"{RECORD}.new"
    return [
        command("mkdir", "-p", INSTALLED_RECORD_DIR),
        StringCommand(command("printf", "%s\\n", *lines), ">", temp),
        command("chmod", "644", temp),
        command("mv", "-f", temp, RECORD),
    ]


@operation()
def names_recorded(flower: Flower, extra_created: tuple[str, ...] = ()):
    """Flower's names are flowerbed's (the record says so, written before anything is
    created), or the host is failed before any change, naming each one refused."""
    found = facts.ask(HostNames, **fact_arguments(flower))
    verdict = decide(flower, found, extra_created)
    if verdict.refused:
        yield from refused(verdict.message())
        return
    if tuple(found["record"] or ()) == verdict.record:
        host.noop(f"{RECORD} lists Flower's names")
        return
    yield from record_commands(verdict.record)


def names_claimed(flower: Flower, extra_created: Iterable[str] = ()) -> OperationMeta:
    """The deploy's first operation: Flower's names checked against the host and recorded.
    `extra_created`: names another part hands over (a takeover's old unit and state
    directory, "unit:NAME" / "dir:/PATH"): they pass, and are recorded as created."""
    facts.expect(HostNames, **fact_arguments(flower))
    extra = tuple(dict.fromkeys(normalised(claim) for claim in extra_created))
    return names_recorded(
        name="Flower's names are flowerbed's (checked on the host, recorded)",
        flower=flower,
        extra_created=extra,
    )


def normalised(claim: str) -> str:
    kind, _, name = claim.partition(":")
    return f"{kind}:{name.removesuffix('.service')}" if kind == "unit" else claim


# --- for remove.py --------------------------------------------------------------------------


class ClaimedNames(FactBase):
    """The record: {claim: "created" | "adopted"}, or None where there is no record."""

    def command(self) -> StringCommand:
        return StringCommand(
            f"if [ -f {RECORD} ]; then echo record-exists;",
            command("cat", RECORD), "; fi; true",
        )  # fmt: skip

    @staticmethod
    def default() -> None:
        return None

    def process(self, output: list[str]) -> dict[str, str] | None:
        if "record-exists" not in output:
            return None
        return recorded({"record": [line for line in output if line != "record-exists"]})


def created(record: dict[str, str] | None, kind: str) -> tuple[str, ...]:
    """The names of `kind` the record lists as created."""
    return tuple(sorted(claim.split(":", 1)[1] for claim, state in (record or {}).items()
                        if state == CREATED_STATE and claim.startswith(f"{kind}:")))  # fmt: skip


def adopted(record: dict[str, str] | None) -> set[str]:
    return {claim for claim, state in (record or {}).items() if state == ADOPTED}
