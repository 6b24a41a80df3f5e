"""Under `make test`'s mixed releases, a fresh host's Debian is its owner's (the test's, or the
module's for a module's hosts): the same whatever ran before it in its shard (it was a
session-wide cycle, so a module's hosts changed release when a module before it booted one host
more or less) and when a rerun starts a module with another test."""

from __future__ import annotations

import collections

import conftest
import pytest

TEST = "tests/lab/test_x.py::test_y"


@pytest.fixture
def mixed(monkeypatch):
    monkeypatch.setattr(conftest, "DISTRO", "mixed")
    monkeypatch.setattr(conftest, "_fresh_asked", collections.Counter())


def asked(monkeypatch, test: str, count: int, before: tuple[str, ...] = ()) -> list[str]:
    """The releases `test`'s first `count` hosts get after the tests `before` booted one each."""
    monkeypatch.setattr(conftest, "_fresh_asked", collections.Counter())
    for other in before:
        conftest.fresh_distro(other)
    return [conftest.fresh_distro(test) for _ in range(count)]


def test_what_ran_before_changes_no_release(mixed, monkeypatch):
    alone = asked(monkeypatch, TEST, 4)
    assert asked(monkeypatch, TEST, 4, before=("a.py::t", "b.py::t", "b.py::u")) == alone
    assert alone[0] != alone[1] and alone[:2] == alone[2:], "a test's hosts alternate"


def test_tests_get_both_releases(mixed):
    firsts = {conftest.fresh_distro(f"tests/lab/test_m.py::test_{n}") for n in range(16)}
    assert firsts == set(conftest.MIXED)


def test_a_modules_own_host_up_is_the_modules_whichever_test_runs_first(mixed, monkeypatch):
    """A module fixture's host gets the same release when a rerun starts with another test:
    the key is the module, as `module_hosts` has it (request.node.nodeid of the module)."""

    def first(test: str, phase: str) -> str:
        monkeypatch.setattr(conftest, "_fresh_asked", collections.Counter())
        monkeypatch.setenv("PYTEST_CURRENT_TEST", f"{test} ({phase})")
        return conftest.fresh_distro()

    module = "tests/lab/test_m.py"
    tests = [f"{module}::test_{n}" for n in range(16)] + [f"{module}::test_p[bookworm]"]
    firsts = {first(t, phase) for t in tests for phase in ("setup", "call")}
    monkeypatch.setattr(conftest, "_fresh_asked", collections.Counter())
    assert firsts == {conftest.fresh_distro(module)}


def test_one_release_is_every_hosts(monkeypatch):
    monkeypatch.setattr(conftest, "DISTRO", "trixie")
    assert {conftest.fresh_distro(f"t.py::test_{n}") for n in range(6)} == {"trixie"}
