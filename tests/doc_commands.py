"""The shell commands that README.md and docs/*.md show, found in their fenced code blocks.

A block in `sh` (or `bash`, `shell`) holds commands, one a line: a line ending in a backslash
goes on with the next, and a `#` comment after a command is not part of it. In any other block
that is not code (`text`, `console`, none), a line starting with `$ ` is a command shown with
its output. Python blocks (inventories, group data) hold no command.

A block whose commands no test runs says why in the line right before it:

    <!-- not run: needs servers of your own and a real Let's Encrypt -->

Every other command is run, as written, by the test RUN_BY names: tests/unit/ checks that
(tests/unit/test_doc_commands_units.py); tests/lab/test_doc_commands.py runs most of them.

    .venv/bin/python tests/doc_commands.py        # every command, where, and its test or reason
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHELL_BLOCKS = ("sh", "bash", "shell")
CODE_BLOCKS = ("python", "py", "toml", "ini", "nginx", "json", "yaml", "promql", "jinja")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")

# Each documented command (as the parser gives it) -> the test that runs it as written.
_LAB = "tests/lab/test_doc_commands.py::"
RUN_BY: dict[str, str] = {
    "make wheel": _LAB + "test_the_wheel_is_built_and_installed_as_the_readme_says",
    "pip install dist/flowerbed-0.1.0-py3-none-any.whl":
        _LAB + "test_the_wheel_is_built_and_installed_as_the_readme_says",
    "make lint": _LAB + "test_make_lint_and_make_docs_leave_the_checkout_as_it_is",
    "make docs": _LAB + "test_make_lint_and_make_docs_leave_the_checkout_as_it_is",
    ".venv/bin/python monitoring/render_rules.py --list":
        _LAB + "test_the_alerting_rules_render_and_check_as_documented",
    ".venv/bin/python monitoring/render_rules.py --set expected_workers=4 --set failure_ratio=0.02 "
    "\\\n    -o /etc/prometheus/flowerbed.rules.yml":
        _LAB + "test_the_alerting_rules_render_and_check_as_documented",
    "promtool check rules /etc/prometheus/flowerbed.rules.yml":
        _LAB + "test_the_alerting_rules_render_and_check_as_documented",
    "pyinfra inventory/lab.py deploy.py --dry --diff --limit h1 --limit h2":
        _LAB + "test_the_preview_against_the_lab_changes_nothing",
    "pyinfra inventory/lab.py verify.py -y --limit h1 --limit h2":
        _LAB + "test_verify_against_the_lab_prints_the_table_and_its_exit_status",
    "echo $?": _LAB + "test_verify_against_the_lab_prints_the_table_and_its_exit_status",
    "pyinfra inventory/prod.py flowerbed.runs.verify -y":
        "tests/lab/test_consumer.py::test_a_consumer_project_deploys_flowerbed_from_its_wheel",
    "make test-unit":
        "tests/lab/test_fresh_machine.py::test_make_test_unit_passes_on_a_fresh_debian_12",
    "make demo": "tests/lab/test_demo.py::"
        "test_make_demo_prints_a_url_and_login_that_answer_and_a_second_run_changes_nothing",
    # the README's Steps (Deploying to your own servers), in order, on a fresh lab host
    **dict.fromkeys(
        (
            "cp .env.example .env && chmod 600 .env",
            "cp inventory/prod.py inventory/mine.py",
            "$EDITOR inventory/mine.py",
            "pyinfra inventory/mine.py deploy.py --dry --diff "
            "--data flower_tls_acme_directory=letsencrypt-staging",
            "pyinfra inventory/mine.py deploy.py "
            "--data flower_tls_acme_directory=letsencrypt-staging",
            "pyinfra inventory/mine.py verify.py -y",
            "pyinfra inventory/mine.py deploy.py",
        ),
        "tests/lab/test_readme_steps.py::test_the_readme_steps_deploy_a_fresh_host_as_my_server",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class DocCommand:
    path: str  # relative to the repository
    line: int  # where the command starts
    text: str  # the command, continuation lines joined with their backslashes and newlines
    not_run: str  # the reason given before its block, "" when a test must run it

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def commands_in(path: Path) -> list[DocCommand]:
    """The commands in one Markdown file's fenced blocks."""
    lines = path.read_text().splitlines()
    name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    found: list[DocCommand] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening["indent"], opening["fence"], opening["lang"].lower()
        reason = _reason_before(lines, i)
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), len(lines)
        )
        if lang not in CODE_BLOCKS:  # a block inside a list item is indented like its fence
            body = [(n, text.removeprefix(indent)) for n, text in
                    enumerate(lines[i + 1 : end], start=i + 2)]  # fmt: skip
            for line, text in _commands(body, prompted=lang not in SHELL_BLOCKS):
                found.append(DocCommand(name, line, text, reason))
        i = end + 1
    return found


def _reason_before(lines: list[str], fence: int) -> str:
    before = next((lines[j].strip() for j in range(fence - 1, -1, -1) if lines[j].strip()), "")
    marked = NOT_RUN.match(before)
    return marked["reason"] if marked else ""


def _commands(body: list[tuple[int, str]], prompted: bool):
    """(line, command) for each command in a block's lines."""
    start, parts = 0, []
    for number, raw in body:
        if not parts:
            if prompted:
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            start = number
        text = _without_comment(raw).rstrip()
        parts.append(text)
        if not text.endswith("\\"):
            yield start, "\n".join(parts)
            parts = []
    if parts:
        yield start, "\n".join(parts)


def _without_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` outside quotes, after a space)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def first_block_after(path: Path, heading: str) -> list[DocCommand]:
    """The commands of the first fenced block after the line `heading`, in order."""
    lines = path.read_text().splitlines()
    start = lines.index(heading) + 1  # line numbers count from 1
    opening = next(n for n in range(start, len(lines)) if FENCE.match(lines[n])) + 1
    closing = next(n for n in range(opening, len(lines)) if lines[n].strip().startswith("```"))
    return [c for c in commands_in(path) if opening < c.line <= closing]


def documented_commands() -> list[DocCommand]:
    return [command for path in documents() for command in commands_in(path)]


def unaccounted(commands: list[DocCommand] | None = None) -> list[DocCommand]:
    """Commands that neither a test runs nor a `not run` comment explains."""
    commands = documented_commands() if commands is None else commands
    return [c for c in commands if not c.not_run and c.text not in RUN_BY]


def documented(text: str) -> DocCommand:
    """The documented command `text`, which a test is about to run: it must be in the docs, in
    a block not marked as not run (the same command may also stand in a marked block elsewhere,
    e.g. `pyinfra inventory/mine.py verify.py -y` in the README's Steps and in docs/)."""
    matches = [c for c in documented_commands() if c.text == text]
    assert matches, f"no longer documented: {text!r}"
    unmarked = [c for c in matches if not c.not_run]
    assert unmarked, f"documented as not run: {matches[0]}"
    return unmarked[0]


def main() -> None:
    for command in documented_commands():
        print(f"{command}\n    -> {RUN_BY.get(command.text) or command.not_run or 'NOTHING'}")
    if missing := unaccounted():
        sys.exit(f"{len(missing)} command(s) neither run by a test nor marked `not run`")


if __name__ == "__main__":
    main()
