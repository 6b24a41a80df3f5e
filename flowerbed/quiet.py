"""Secret files compared or read on a host without pyinfra printing them, in one round trip.

A fact's output is printed at -vvv (and its command at -vv), so a file holding a secret is never
a fact: its desired content goes over the SSH channel's stdin and is compared on the host (only
"same" or "differs" comes back), and a file whose content is needed here (the htpasswd's bcrypt
hashes) is read with pyinfra's printing off. A digest would not do: it lets anyone guess a
weak secret offline.

While the deploy is prepared, each such operation declares what it will ask (`expect_compare`,
`expect_read`); the first one asked runs every declared one of this host in one command, and
later ones are answered from it. As soon as an operation on the host has changed something,
what was fetched is forgotten and each is asked again on its own (as flowerbed.facts does).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from pyinfra import host, state
from pyinfra.api import OperationError, StringCommand

from . import pyinfra_internals
from .facts import Answers
from .shell import command

MARK = "@@flowerbed-quiet"
Ask = tuple[str, str, bytes]  # ("compare", path, desired content) or ("read", path, b"")


@dataclass
class HostAsks(Answers):
    """One host's declared compares and reads, and the answers fetched since its last change."""

    expected: dict[Ask, None] = field(default_factory=dict)  # an ordered set


_hosts: dict[tuple[int, str], HostAsks] = {}


def _host_asks() -> HostAsks:
    return _hosts.setdefault((id(state), host.name), HostAsks())


def expect_compare(path: str, content: bytes) -> None:
    """An operation of this host will ask whether `path` holds exactly `content`."""
    _host_asks().expected.setdefault(("compare", path, content))


def expect_read(path: str) -> None:
    """An operation of this host will read `path` (missing or unreadable: empty)."""
    _host_asks().expected.setdefault(("read", path, b""))


def holds(path: str, content: bytes) -> bool:
    """Whether the host's `path` holds exactly `content`, compared on the host."""
    return bool(_answer(("compare", path, content)))


def read(path: str) -> str:
    """The host's `path`, read without printing it ('' when missing)."""
    return str(_answer(("read", path, b"")))


def _answer(ask: Ask) -> bool | str:
    asks = _host_asks()
    just_changed = asks.forget_if_stale()
    if ask not in asks.answers:
        # right after a change only what is asked; otherwise every declared one not yet answered
        pending = [] if just_changed else [a for a in asks.expected if a not in asks.answers]
        asks.answers.update(_run(list(dict.fromkeys([ask, *pending])), _connector_arguments()))
    return asks.answers[ask]


def _connector_arguments() -> dict:
    """How pyinfra runs a command here: the operation's arguments (_sudo...), else the host's."""
    return pyinfra_internals.connector_arguments(state, host)


def script(asks: list[Ask]) -> tuple[StringCommand, list[str]]:
    """One command answering every ask in order, and its stdin: one base64 line per compare."""
    parts: list = []
    stdin: list[str] = []
    for index, (kind, path, content) in enumerate(asks):
        parts += ["echo", f"{MARK}{index};"]
        if kind == "compare":
            stdin.append(base64.b64encode(content).decode())
            parts += [
                "read", "-r", "line;", "printf", "'%s'", '"$line"', "|",
                command("base64", "-d"), "|", command("cmp", "-s", "--", path, "-"),
                "&&", "echo", "same", "||", "echo", "differs;",
            ]  # fmt: skip
        else:
            parts += ["{", command("cat", "--", path), "2>/dev/null", "||", "true;", "};"]
    return StringCommand(*parts, "true"), stdin


def answers(asks: list[Ask], lines: list[str]) -> dict[Ask, bool | str]:
    """The script's output, split at its marks: same/differs per compare, text per read."""
    found: dict[int, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line.startswith(MARK) and line[len(MARK) :].isdigit():
            current = found.setdefault(int(line[len(MARK) :]), [])
        elif current is not None:
            current.append(line)
    result: dict[Ask, bool | str] = {}
    for index, ask in enumerate(asks):
        output = found.get(index, [])
        if ask[0] == "compare":
            result[ask] = output == ["same"]
        else:
            result[ask] = "".join(f"{line}\n" for line in output)
    return result


def _run(asks: list[Ask], arguments: dict) -> dict[Ask, bool | str]:
    compare_and_read, stdin = script(asks)
    ran, output = host.run_shell_command(
        compare_and_read,
        print_output=False,
        print_input=False,
        **({**arguments, "_stdin": stdin} if stdin else arguments),
    )
    if not ran:
        raise OperationError("could not compare or read the secret files on the host")
    return answers(asks, output.stdout_lines)
