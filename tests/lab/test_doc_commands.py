"""The commands README.md and docs/*.md show, run as written (tests/doc_commands.py finds them;
tests/unit/test_doc_commands_units.py checks that each is run here, elsewhere, or marked).

Each runs in bash from the repository, with the venv on PATH as the README's setup leaves it
(`source .venv/bin/activate`). Against the lab, they only read the shared hosts h1..h3 (a
preview, the verify run): this module runs in the "shared" shard. What they write stays in
the checkout's ignored files (dist/) or is the same bytes again (docs/configuration.md); the
rendering into /etc/prometheus happens inside a mount namespace of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, Lab
from doc_commands import documented
from package_helpers import venv_with_repo_dependencies

pytestmark = pytest.mark.lab

WHEEL = "make wheel"
PIP_INSTALL = "pip install dist/flowerbed-0.1.0-py3-none-any.whl"
LINT, DOCS = "make lint", "make docs"
RULES_LIST = ".venv/bin/python monitoring/render_rules.py --list"
RULES_RENDER = (
    ".venv/bin/python monitoring/render_rules.py --set expected_workers=4 "
    "--set failure_ratio=0.02 \\\n    -o /etc/prometheus/flowerbed.rules.yml"
)
RULES_CHECK = "promtool check rules /etc/prometheus/flowerbed.rules.yml"
PREVIEW = "pyinfra inventory/lab.py deploy.py --dry --diff --limit h1 --limit h2"
VERIFY = "pyinfra inventory/lab.py verify.py -y --limit h1 --limit h2"
EXIT_STATUS = "echo $?"


def shell(
    *commands: str, env: dict | None = None, cwd: Path = REPO, timeout: float = 600
) -> subprocess.CompletedProcess:
    """The documented commands, each checked to be in the docs, in one bash script."""
    script = "\n".join(documented(command).text for command in commands)
    venv = REPO / ".venv"
    # as typed in a shell of its own: not as a sub-make of the suite's `make test`, which would
    # print make's "Entering directory" lines around the output
    outer_make = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    environ = {k: v for k, v in os.environ.items() if k not in outer_make}
    environ |= {"VIRTUAL_ENV": str(venv), "PYINFRA_PROGRESS": "off"}
    environ["PATH"] = f"{venv / 'bin'}:{environ['PATH']}"
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env={**environ, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_the_wheel_is_built_and_installed_as_the_readme_says(tmp_path):
    """`make wheel`, then `pip install dist/...whl` in a venv of the consumer's (its
    dependencies from the repo venv, so pip needs no index): flowerbed imports from there."""
    venv = tmp_path / "consumer-venv"
    python, site = venv_with_repo_dependencies(venv, pip=True)
    built = shell(WHEEL)
    assert built.returncode == 0, built.stdout + built.stderr
    assert built.stdout.strip().endswith("dist/flowerbed-0.1.0-py3-none-any.whl"), built.stdout

    # the consumer's venv first on PATH: its pip, as "install it where your deploy runs" says
    path = f"{venv / 'bin'}:{os.environ['PATH']}"
    offline = {"PATH": path, "VIRTUAL_ENV": str(venv), "PIP_NO_INDEX": "1",
               "PIP_DISABLE_PIP_VERSION_CHECK": "1"}  # fmt: skip
    installed = subprocess.run(
        ["bash", "-c", documented(PIP_INSTALL).text], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, **offline}, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    found = subprocess.run(
        [python, "-c", "import flowerbed.runs, flowerbed.resources as r; "
         "print(flowerbed.runs.__file__, r.TEMPLATES)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert found.count(site) == 2, f"flowerbed did not come from the installed wheel: {found}"


def test_make_lint_and_make_docs_leave_the_checkout_as_it_is():
    reference = REPO / "docs" / "configuration.md"
    before = reference.read_bytes()
    done = shell(LINT, DOCS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All checks passed!" in done.stdout
    assert reference.read_bytes() == before, "make docs changed the committed reference"


def test_the_alerting_rules_render_and_check_as_documented(tmp_path):
    """The three commands of docs/monitoring.md, with /etc/prometheus a tmpfs of their own."""
    script = tmp_path / "render.sh"
    script.write_text(
        "set -e\nmount -t tmpfs flowerbed-docs /etc/prometheus\n"
        + "\n".join(documented(c).text for c in (RULES_LIST, RULES_RENDER, RULES_CHECK))
        + "\necho ==== rendered\ncat /etc/prometheus/flowerbed.rules.yml\n"
    )
    venv = REPO / ".venv" / "bin"
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", str(script)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{venv}:{os.environ['PATH']}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    printed, rendered = done.stdout.split("==== rendered\n")
    assert "expected_workers=1" in printed and "failure_ratio=0.05" in printed, printed
    assert "SUCCESS" in printed, "promtool's verdict"
    assert re.search(r"\) < 4\b", rendered) and "0.02" in rendered, rendered
    assert not Path("/etc/prometheus/flowerbed.rules.yml").exists(), "written outside the tmpfs"


def test_the_preview_against_the_lab_changes_nothing(lab: Lab):
    done = shell(PREVIEW, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "--> Detected changes:" in output and "[h3]" not in output, output
    assert "[h1]" in output and "[h2]" in output, output
    assert "Beginning operation run" not in output, "a dry run executes nothing"


def test_verify_against_the_lab_prints_the_table_and_its_exit_status(lab: Lab):
    done = shell(VERIFY, EXIT_STATUS, timeout=300)
    lines = done.stdout.rstrip("\n").splitlines()
    status = lines[-1]
    assert status in ("0", "1"), done.stdout + done.stderr
    header = next(line for line in lines if line.startswith("host  "))
    columns = re.split(r"\s{2,}", header)
    assert columns[0] == "host" and columns[-1] == "verdict", header
    rows = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("h")
            and re.split(r"\s{2,}", line)[-1] in ("OK", "PROBLEM")}  # fmt: skip
    assert sorted(rows) == ["h1", "h2"], done.stdout
    healthy = all(verdict == "OK" for verdict in rows.values())
    assert status == ("0" if healthy else "1"), done.stdout + done.stderr
    shown = documented_table_header()
    assert [c for c in columns if c in shown] == shown, (
        f"docs/operations.md's table has columns verify.py no longer prints: {shown} vs {columns}"
    )


def documented_table_header() -> list[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    after = text[text.index(f"$ {VERIFY}\n") :].splitlines()[1]
    return re.split(r"\s{2,}", after.strip())
