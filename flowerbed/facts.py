"""Facts fetched once per host: one round trip answers every fact the deploy's operations ask.

pyinfra runs each `host.get_fact` as its own command on the host, at the time an operation asks,
so a deploy that checks 50 things pays 50 round trips even when nothing changed. Here:

- while the deploy code runs (pyinfra's prepare), each flowerbed operation's helper declares the
  facts the operation will ask for: `expect(Fact, **arguments)`;
- when an operation asks, `ask(Fact, **arguments)`, every declared fact not asked yet runs in one
  shell command (each fact's own `command()`, output split and given to its own `process()`),
  and later asks are answered from that batch;
- as soon as an operation on the host has changed something, what was fetched before is
  forgotten: the next ask fetches only its own fact, and the first ask after an operation that
  changed nothing fetches all that are left again, together. So an answer never predates a
  change this run made, a run that changes nothing costs one round trip, and a first deploy
  (where nearly every operation changes something) about one per fact, as pyinfra does.

Facts of one kind that differ only in what they list (a fact class's `merge_argument`: the
paths, units or packages) run as one command and each gets its part of the answer.

A fact whose command fails inside the batch is asked again on its own through
`host.get_fact`, so a failure is reported (and fails the host) exactly as pyinfra reports it.
Operations must ask before they yield their first command.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pyinfra import host, state
from pyinfra.api import FactBase, StringCommand

from . import pyinfra_internals

BEGIN = "@@flowerbed-fact"
END = "@@flowerbed-status"
MISSING_COMMAND = "@@flowerbed-missing-command"
# a batch is run with the asking operation's privileges; these decide who runs it
PRIVILEGE_ARGUMENTS = (
    "_sudo",
    "_sudo_user",
    "_su_user",
    "_doas",
    "_doas_user",
    "_shell_executable",
)

Key = tuple[type[FactBase], tuple[tuple[str, Hashable], ...]]


def _key(fact: type[FactBase], arguments: dict[str, Any]) -> Key:
    return fact, tuple(sorted((name, _frozen(value)) for name, value in arguments.items()))


def _frozen(value: Any) -> Hashable:
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


class Facts(tuple):
    """The facts of one batch; at `-v` pyinfra prints them as the batch's argument."""

    def __str__(self) -> str:
        return f"{len(self)} facts: " + ", ".join(fact.name for fact, _ in self)


class Batch(FactBase):
    """Several facts' commands run as one; {index: (exit status, output lines)}."""

    def command(self, facts: Facts) -> StringCommand:
        parts: list[Any] = []
        for index, (fact_class, arguments) in enumerate(facts):
            fact, kwargs = fact_class(), dict(arguments)
            command = fact.command(**kwargs)
            if required := fact.requires_command(**kwargs):
                command = StringCommand(
                    "if", "command", "-v", required, ">/dev/null", "2>&1;", "then", command, ";",
                    "else", "echo", MISSING_COMMAND, ";", "fi",
                )  # fmt: skip
            # the status line starts on a line of its own, even after output without a newline
            parts += ["echo", f"{BEGIN}{index};", "(", command, ");"]
            parts += ["printf", "'\\n%s %s\\n'", END, '"$?";']
        return StringCommand(*parts, "true")

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict[int, tuple[int, list[str]]]:
        results: dict[int, tuple[int, list[str]]] = {}
        index, lines = None, []
        for line in output:
            if line.startswith(BEGIN):
                index, lines = int(line[len(BEGIN) :]), []
            elif line.startswith(END + " ") and index is not None:
                if lines and lines[-1] == "":
                    lines.pop()  # the newline before the status line
                results[index] = (int(line.split()[1]), lines)
                index = None
            elif index is not None:
                lines.append(line)
        return results


@dataclass
class Answers:
    """Answers fetched from the current host, kept until an operation changes something there,
    the stage changes (preparing to executing) or other privileges ask (flowerbed.quiet too)."""

    answers: dict = field(default_factory=dict)
    fetched_when: tuple = ()  # (changed operations, executing, privileges) at the fetch

    def forget_if_stale(self) -> bool:
        """Forget answers fetched before a change, a stage or other privileges; True when an
        operation has changed something since they were fetched."""
        now = (changed_operations(), state.is_executing, privileges())
        if now == self.fetched_when:
            return False
        changed = bool(self.fetched_when) and now[0] != self.fetched_when[0]
        if self.fetched_when and now[1] != self.fetched_when[1]:
            self.new_stage()
        self.answers.clear()
        self.fetched_when = now
        return changed

    def new_stage(self) -> None:
        """The stage changed since the last fetch."""


@dataclass
class HostFacts(Answers):
    """One host's declared facts and the answers fetched since its last change."""

    expected: dict[Key, None] = field(default_factory=dict)  # an ordered set
    asked: set[Key] = field(default_factory=set)

    def new_stage(self) -> None:
        self.asked.clear()  # asked while preparing (a preview): asked again to execute


_hosts: dict[tuple[int, str], HostFacts] = {}


def _host_facts() -> HostFacts:
    return _hosts.setdefault((id(state), host.name), HostFacts())


def changed_operations() -> Any:
    """How many of this host's operations have run and changed something (when pyinfra cannot
    tell, a new value each time: answers are kept no longer than one ask)."""
    return pyinfra_internals.changed_operations(state, host)


def privileges() -> tuple:
    """Who the asking operation runs commands as (a batch runs with its arguments). Outside an
    operation's body (in an `_if`) pyinfra runs facts with the host's data defaults."""
    arguments = pyinfra_internals.current_op_arguments(host)
    if arguments is None:
        key = (id(state), host.name)
        if key not in _defaults:
            _defaults[key] = pyinfra_internals.default_arguments(state, host)
        arguments = _defaults[key]
        if arguments is None:  # not told: answers are kept no longer than one ask
            return (object(),)
    return tuple(repr(arguments.get(name) or None) for name in PRIVILEGE_ARGUMENTS)


_defaults: dict[tuple[int, str], dict] = {}


def expect(fact: type[FactBase], **arguments) -> None:
    """This host's operations will ask for `fact` with these arguments: fetch it in the batch."""
    _host_facts().expected.setdefault(_key(fact, arguments))


def ask(fact: type[FactBase], **arguments) -> Any:
    """The fact's value on the current host, from its batch (fetched now if needed)."""
    facts = _host_facts()
    just_changed = facts.forget_if_stale()
    key = _key(fact, arguments)
    if key not in facts.answers:
        # right after a change only what is asked (the next operation may change things too,
        # as on a first deploy); after an operation that changed nothing, all that is left
        pending = [k for k in facts.expected if k not in facts.asked and k not in facts.answers]
        _fetch(facts, [key] if just_changed else [key, *(k for k in pending if k != key)])
    facts.asked.add(key)
    return facts.answers[key]


def _fetch(facts: HostFacts, keys: list[Key]) -> None:
    merged = _merged(keys)
    commands = list(dict.fromkeys(merged.values()))
    results = host.get_fact(Batch, facts=Facts(commands)) if len(commands) > 1 else {}
    values = {}
    for index, key in enumerate(commands):
        fact_class, arguments = key
        status, lines = results.get(index, (None, []))
        if status != 0:  # failed, or a batch of one: pyinfra runs it and reports any failure
            values[key] = host.get_fact(fact_class, **dict(arguments))
            continue
        fact = fact_class()
        try:
            value = fact.process(lines) if lines and lines != [MISSING_COMMAND] else fact.default()
        except Exception:  # processed again by pyinfra, which reports the problem its way
            value = host.get_fact(fact_class, **dict(arguments))
        values[key] = value
    for key in keys:
        facts.answers[key] = _select(values[merged[key]], key, merged[key])


def _merged(keys: list[Key]) -> dict[Key, Key]:
    """Each key -> the key run for it: facts of a class with a `merge_argument` (a tuple of
    paths, units, packages) whose other arguments are equal run as one command."""
    groups: dict[tuple, list[Key]] = {}
    for key in keys:
        fact_class, arguments = key
        merge = getattr(fact_class, "merge_argument", None)
        others = tuple((name, value) for name, value in arguments if name != merge)
        groups.setdefault((fact_class, others) if merge else key, []).append(key)
    merged = {}
    for group in groups.values():
        fact_class, arguments = group[0]
        merge = getattr(fact_class, "merge_argument", None)
        if merge and len(group) > 1:
            values = tuple(dict.fromkeys(v for _, args in group for v in dict(args)[merge]))
            run = _key(fact_class, {**dict(arguments), merge: values})
        else:
            run = group[0]
        merged.update({key: run if merge else key for key in group})
    return merged


def _select(value: Any, key: Key, run: Key) -> Any:
    """The part of a merged fact's value that answers `key` (a dict by key, a set by member)."""
    if key == run:
        return value
    fact_class, arguments = key
    wanted = set(dict(arguments)[fact_class.merge_argument])
    if isinstance(value, dict):
        return {name: item for name, item in value.items() if name in wanted}
    return {item for item in value if item in wanted}
