"""Shell commands built from argument lists, never from templated strings."""

import shlex
from collections.abc import Iterator

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, StringCommand


def command(*argv: str, **connector_arguments) -> StringCommand:
    """One command: each argument is quoted for the shell."""
    return StringCommand(shlex.join(argv), **connector_arguments)


def all_of(*argvs: list[str]) -> StringCommand:
    """Commands run in order while each succeeds (`a && b`)."""
    return StringCommand(" && ".join(shlex.join(argv) for argv in argvs))


def refused(message: str) -> Iterator[FunctionCommand]:
    """An operation's commands that fail the host with `message`, before anything else of the
    operation runs (a preview shows the refusal it would meet)."""
    if not state.is_executing:
        host.log_styled(f"would fail: {message}", fg="red", log_func=logger.error)
    yield FunctionCommand(_refuse, (message,), {})


def _refuse(state, host, message: str) -> bool:
    host.log_styled(message, fg="red", log_func=logger.error)
    return False
