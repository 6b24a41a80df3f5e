"""Every shell command in README.md and docs/*.md is run by a test, or says why not
(tests/doc_commands.py); the parser that finds them. No lab: the lab runs them
(tests/lab/test_doc_commands.py and the tests RUN_BY names)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from doc_commands import (
    REPO,
    RUN_BY,
    commands_in,
    documented_commands,
    first_block_after,
    unaccounted,
)


def test_every_documented_command_is_run_by_a_test_or_marked_not_run():
    missing = "\n".join(str(command) for command in unaccounted())
    assert not missing, (
        "documented commands no test runs: run each in a test (tests/doc_commands.py's RUN_BY) "
        f"or put `<!-- not run: REASON -->` right before its block:\n{missing}"
    )


def test_the_docs_show_commands_in_every_part():
    commands = documented_commands()
    assert len(commands) >= 40 and {c.path for c in commands} >= {
        "README.md", "docs/operations.md", "docs/monitoring.md", "docs/troubleshooting.md",
        "docs/lab-and-tests.md",
    }  # fmt: skip
    assert 10 <= len([c for c in commands if not c.not_run]) < len(commands)


def strings_in(module: Path) -> set[str]:
    tree = ast.parse(module.read_text())
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}  # fmt: skip


def test_each_test_named_runs_its_command_and_the_command_is_still_documented():
    documented = {c.text for c in documented_commands() if not c.not_run}
    stale = sorted(set(RUN_BY) - documented)
    assert not stale, f"RUN_BY names commands the docs no longer show (or mark not run): {stale}"
    for command, test in RUN_BY.items():
        path, _, name = test.partition("::")
        module = REPO / path
        assert path.startswith("tests/lab/") and module.is_file(), test
        functions = {n.name for n in ast.walk(ast.parse(module.read_text()))
                     if isinstance(n, ast.FunctionDef)}  # fmt: skip
        assert name in functions, f"{test} does not exist"
        assert command in strings_in(module), f"{test} does not hold the command {command!r}"


README_STEPS = (
    "tests/lab/test_readme_steps.py::test_the_readme_steps_deploy_a_fresh_host_as_my_server"
)


def test_the_readme_steps_are_run_in_order_by_one_lab_test():
    """The README's Steps block (Deploying to your own servers) is exactly what
    tests/lab/test_readme_steps.py follows, in order: RUN_BY lists them in that order."""
    block = [c.text for c in first_block_after(REPO / "README.md", "### Steps")]
    assert block == [command for command, test in RUN_BY.items() if test == README_STEPS]
    assert len(block) == 7 and all(not c.not_run for c in commands_in(REPO / "README.md")
                                   if c.text in block)  # fmt: skip


def test_the_readme_stays_short_and_its_links_resolve():
    """Issue 20: a README read in five minutes; the detail is in docs/, linked."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    assert "docs/operations.md" in links and "LICENSE" in links
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, missing


MARKDOWN = """\
Intro `inline command` is prose.

```sh
make one   # a comment
# a whole-line comment
make two \\
    --flag 'a # not a comment'
```

<!-- not run: needs a server of your own -->
```sh
pyinfra mine.py deploy.py
```

```text
$ pyinfra lab.py verify.py -y
host  verdict
$ echo $?
1
```

```python
import os  # no command here
```

1. In a list:
   ```sh
   .venv/bin/python tool.py --list
   ```
"""


def test_the_parser_finds_each_command_as_written(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(MARKDOWN)
    found = [(c.line, c.text, c.not_run) for c in commands_in(page)]
    assert found == [
        (4, "make one", ""),
        (6, "make two \\\n    --flag 'a # not a comment'", ""),
        (12, "pyinfra mine.py deploy.py", "needs a server of your own"),
        (16, "pyinfra lab.py verify.py -y", ""),
        (18, "echo $?", ""),
        (28, ".venv/bin/python tool.py --list", ""),
    ]


@pytest.mark.parametrize(
    "before",
    ["<!-- not run: -->", "<!-- not run because -->", "<!-- not run: x -->\n\nText between.\n"],
)
def test_a_marker_needs_a_reason_and_must_be_right_before_its_block(tmp_path: Path, before):
    page = tmp_path / "page.md"
    page.write_text(f"{before}\n```sh\nmake three\n```\n")
    (command,) = commands_in(page)
    assert command.not_run == ""
