"""Shell commands built from argument lists, never from templated strings."""

import shlex

from pyinfra.api import StringCommand


def command(*argv: str, **connector_arguments) -> StringCommand:
    """One command: each argument is quoted for the shell."""
    return StringCommand(shlex.join(argv), **connector_arguments)


def all_of(*argvs: list[str]) -> StringCommand:
    """Commands run in order while each succeeds (`a && b`)."""
    return StringCommand(" && ".join(shlex.join(argv) for argv in argvs))
