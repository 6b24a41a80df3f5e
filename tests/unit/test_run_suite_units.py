"""tests/run_suite.py runs a failed lab test once more: the node ids it reads from pytest's
JUnit report must name exactly the tests that failed, and pytest must collect them again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from run_suite import failed_tests

MODULE = """
import pytest

def test_passes():
    pass

def test_fails():
    assert False

@pytest.mark.parametrize("n", [1, 2])
def test_one_case_fails(n):
    assert n == 1

class TestGroup:
    def test_in_a_class_fails(self):
        assert False

@pytest.fixture
def broken():
    raise RuntimeError("setup")

def test_setup_errors(broken):
    pass
"""


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(root), *args],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip


def test_the_failed_tests_are_read_from_the_report_and_collected_again(tmp_path: Path):
    (tmp_path / "tests" / "lab").mkdir(parents=True)
    (tmp_path / "tests" / "lab" / "test_demo.py").write_text(MODULE)
    report = tmp_path / "report.xml"
    first = pytest_in(tmp_path, "tests/lab/test_demo.py", f"--junitxml={report}")
    assert first.returncode == 1, first.stdout
    again = failed_tests(report, root=tmp_path)
    assert again == [
        "tests/lab/test_demo.py::test_fails",
        "tests/lab/test_demo.py::test_one_case_fails[2]",
        "tests/lab/test_demo.py::TestGroup::test_in_a_class_fails",
        "tests/lab/test_demo.py::test_setup_errors",
    ]
    collected = pytest_in(tmp_path, "--collect-only", "-q", *again)
    assert f"{len(again)} tests collected" in collected.stdout, collected.stdout


def test_no_report_means_nothing_to_run_again(tmp_path: Path):
    assert failed_tests(tmp_path / "missing.xml", root=tmp_path) == []


TEARDOWN_FAILS = """
import pytest

@pytest.fixture(scope="module")
def leaves_a_mess():
    yield
    raise RuntimeError("what the module's tests left behind")

def test_fails(leaves_a_mess):
    assert False

def test_passes(leaves_a_mess):
    pass
"""


def test_a_teardown_error_is_never_run_again(tmp_path: Path):
    """A module fixture that fails on teardown tells of the module's passed tests too: running
    only the failed test again would set it up fresh and call the mess flaky."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mess.py").write_text(TEARDOWN_FAILS)
    report = tmp_path / "report.xml"
    assert pytest_in(tmp_path, "tests/test_mess.py", f"--junitxml={report}").returncode == 1
    assert failed_tests(report, root=tmp_path) == []
