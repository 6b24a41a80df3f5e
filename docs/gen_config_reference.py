"""Write docs/configuration.md: every key of the settings model, from the model itself.

    .venv/bin/python docs/gen_config_reference.py           # (re)write docs/configuration.md
    .venv/bin/python docs/gen_config_reference.py --check   # exit 1 if it is stale

Keys come from flowerbed.settings (SECTIONS: each section is a dataclass whose fields are data
keys, `section.prefix + field name`, each with `setting(check, doc)` metadata), so a key added
to the model appears here without touching this script. For each key: its type (the field's
annotation), its default (flowerbed/defaults.py, the repository's group_data/all.py), the
values its check allows (read from the check's closure: ranges, choices, hints) and what it
does (the comment beside it in group_data/all.py, and the model's own doc). Keys are listed in
group_data/all.py's order, under its section headings; a model key missing from all.py comes
last, under "Keys without a default".

tests/unit/test_docs_units.py fails when docs/configuration.md differs from what this writes.
"""

from __future__ import annotations

import ast
import inspect
import io
import re
import sys
import tokenize
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from flowerbed.resources import DEFAULTS  # noqa: E402
from flowerbed.settings import SECTIONS  # noqa: E402

ALL_PY = REPO / "group_data" / "all.py"
OUTPUT = REPO / "docs" / "configuration.md"


@dataclass
class Key:
    name: str
    section: type
    type: str
    check: Any
    doc: str


@dataclass
class Commented:
    """What group_data/all.py says about a key: its heading, the notes above it, its comment."""

    heading: str
    notes: list[str]
    comment: str
    intro: list[str]  # the notes under its heading before the heading's first key


def model_keys(sections: dict[str, type] | None = None) -> dict[str, Key]:
    """Every data key of the settings model, in the model's order."""
    keys = {}
    for section in (sections or SECTIONS).values():
        for f in fields(section):
            name = section.prefix + f.name
            annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            keys[name] = Key(
                name, section, annotation, f.metadata.get("check"), f.metadata.get("doc", "")
            )
    return keys


def all_py_comments(text: str) -> dict[str, Commented]:
    """Each assignment's heading (`# --- X ---`), the comment lines just above it and the
    comment beside it, in the file's order."""
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string
    lines = text.splitlines()
    found: dict[str, Commented] = {}
    heading, notes, previous = "", [], None
    keyed_headings: set[str] = set()
    assigned = {
        node.lineno: (node.targets[0].id, node.end_lineno)
        for node in ast.parse(text).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if number in assigned:
            name, end = assigned[number]
            beside = comments.get(end, "") if not lines[end - 1].lstrip().startswith("#") else ""
            first = heading not in keyed_headings
            keyed_headings.add(heading)
            intro, notes = (notes, []) if first else ([], notes)
            found[name] = previous = Commented(heading, notes, beside.lstrip("#").strip(), intro)
            notes = []
        elif heading_match := re.fullmatch(r"#\s*---\s*(.+?)\s*-*", stripped):
            heading, notes, previous = heading_match.group(1), [], None
        elif stripped.startswith("# (") and previous and not notes:
            previous.notes.append(stripped.lstrip("#").strip())  # a key's comment, continued
        elif stripped.startswith("#") and not stripped.startswith(("# ruff:", "# fmt:")):
            if not stripped.startswith("# One line per knob"):
                notes.append(stripped.lstrip("#").strip())
        elif not stripped:
            notes = notes if found else []
    return found


def closure(check: Any) -> dict[str, Any]:
    names = getattr(getattr(check, "__code__", None), "co_freevars", ())
    cells = getattr(check, "__closure__", None) or ()
    return {name: cell.cell_contents for name, cell in zip(names, cells, strict=False)}


def factory(check: Any) -> str:
    """The name of the function that made `check` (`integer` for integer()'s check)."""
    return getattr(check, "__qualname__", "").split(".<locals>")[0]


def allowed(check: Any) -> str:
    """The values `check` accepts, as far as its closure says."""
    if check is None:
        return ""
    env, kind = closure(check), factory(check)
    optional = env.get("optional", False)
    if kind == "boolean":
        return "True or False"
    if kind == "integer":
        return f"an integer from {env['minimum']} to {env['maximum']}" + (
            ", or None" if optional else ""
        )
    if kind == "one_of":
        choices = ", ".join(f"`{c!r}`" for c in env["choices"])
        return f"one of {choices}" + (", or `''`" if optional else "")
    if kind == "url":
        return f"a URL ({'/'.join(env['schemes'])}) without credentials" + (
            ", or `''`" if optional else ""
        )
    if kind == "string_list":
        inner = allowed(env["item"])
        return f"a list; each item: {inner}" if inner else "a list"
    for name in ("hint", "what"):
        if isinstance(env.get(name), str):
            return env[name] + (" (or `''`)" if optional and "''" not in env[name] else "")
    constants = constant_values(check)
    if constants:
        return constants
    module = sys.modules.get(getattr(check, "__module__", ""), None)
    made_by = getattr(module, kind, None)
    doc = inspect.getdoc(made_by) if made_by else None
    return doc.splitlines()[0] if doc else ""


def constant_values(check: Any) -> str:
    """A module-level tuple the check requires values to be in (`... not in TASK_COLUMNS`)."""
    module = sys.modules.get(getattr(check, "__module__", ""), None)
    try:
        source = inspect.getsource(check)
    except (OSError, TypeError):
        return ""
    for name in re.findall(r"\bnot in ([A-Z][A-Z0-9_]*)\b", source):
        value = getattr(module, name, None)
        if isinstance(value, tuple) and value and all(isinstance(v, (str, int)) for v in value):
            return "each from " + ", ".join(f"`{v!r}`" for v in value)
    return ""


def prose(text: str) -> str:
    """all.py's comments as Markdown text: `<version>` would be read as an HTML tag."""
    return text.replace("<", "\\<")


def shown_default(name: str) -> str:
    if name not in DEFAULTS:
        return "(none: required)"
    return f"`{DEFAULTS[name]!r}`"


def source_of(section: type) -> str:
    module = sys.modules[section.__module__]
    path = Path(module.__file__).resolve().relative_to(REPO)
    return f"`{section.__name__}` in `{path.as_posix()}`"


def render(sections: dict[str, type] | None = None, all_py: str | None = None) -> str:
    keys = model_keys(sections)
    commented = all_py_comments(all_py if all_py is not None else ALL_PY.read_text())
    ordered = [k for k in commented if k in keys] + [k for k in keys if k not in commented]
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by docs/gen_config_reference.py from flowerbed/settings/ and",
        "     group_data/all.py: run `make docs`; do not edit by hand. -->",
        "",
        f"Every key flowerbed reads ({len(keys)} keys). Set them in `group_data/<group>.py`, per "
        "host in the inventory, or once with `--data key=value`; the default is in "
        "`group_data/all.py` (shipped as `flowerbed/defaults.py`). Every value is checked "
        "before any host is touched; a misspelt `flower_*` key is an error. Keys ending in "
        "`_env` hold the NAME of an environment variable (set in `.env`, see `.env.example`), "
        "never a secret itself.",
        "",
        "Only `flower_allowed_sources` and `flower_admin_sources` have no usable default: "
        "an empty list is refused.",
    ]
    heading = None
    for name in ordered:
        key = keys[name]
        note = commented.get(name)
        group = note.heading if note else "Keys without a default"
        if group != heading:
            heading = group
            out += ["", f"## {group}"]
            if note and note.intro:
                out += ["", prose(" ".join(note.intro))]
        out += ["", f"### `{name}`", ""]
        out.append(f"- **Type**: `{key.type}`; **default**: {shown_default(name)}")
        if values := allowed(key.check):
            out.append(f"- **Allowed**: {values}")
        what = [prose(note.comment)] if note and note.comment else []
        if key.doc and key.doc.rstrip(".") not in " ".join(what):
            what.append(key.doc)
        if what:
            out.append("- **What it does**: " + "; ".join(w.rstrip(".") for w in what) + ".")
        if note and note.notes:
            out.append("- **Note**: " + prose(" ".join(note.notes)))
        out.append(f"- **Model**: {source_of(key.section)}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
