"""The operator's env file (.env, or the file $FLOWERBED_ENV_FILE names) as rotate.py writes it.

Written under an exclusive lock (fcntl.flock on <file>.lock beside it, held for the whole run,
so two rotate.py runs never interleave) and atomically (a 0600 copy renamed over it); a write
can check that the file still holds what the run planned from (compare-and-swap).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values, set_key, unset_key

from .inputs.secrets import ENV_FILE_VARIABLE
from .settings import SettingsError

LOCK_WAIT = 10.0  # seconds a write waits for the env file's lock
UNQUOTED = re.compile(r"[A-Za-z0-9_.:,@/+=%-]*")  # values the lab's simple readers parse too


def env_file_holding(variable: str, environ: Mapping[str, str]) -> Path:
    """The env file `variable` comes from (checked before that file is loaded)."""
    if variable in environ:
        raise SettingsError(
            variable,
            "is set in the environment, so rotate.py cannot write the new value where it came from",
            f"unset it and keep it in .env or in the file ${ENV_FILE_VARIABLE} names",
        )
    named = environ.get(ENV_FILE_VARIABLE)
    path = Path(named) if named else Path.cwd() / ".env"
    if not path.is_file():
        raise SettingsError(
            ENV_FILE_VARIABLE, f"{path} does not exist", "point it at the file holding your secrets"
        )
    if not dotenv_values(path).get(variable):
        raise SettingsError(variable, f"is not set in {path}", "add it (see .env.example)")
    return path


class EnvFileBusy(SettingsError):
    """Another process holds the env file's lock, or changed the file since this run read it."""


def lock_file(path: Path) -> Path:
    """The lock beside the env file (the env file itself is replaced by a rename, so a lock on
    it would not outlive the first write)."""
    return path.with_name(path.name + ".lock")


_held: dict[Path, int] = {}  # env file -> the open lock file this process holds


def hold_env_file(path: Path, wait: float = 0.0) -> None:
    """Take the env file's exclusive lock for the rest of this process (released when it
    exits); a second rotate.py on the same file is refused instead of interleaving."""
    key = path.resolve()
    if key in _held:
        return
    fd = os.open(lock_file(path), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise EnvFileBusy(
                    ENV_FILE_VARIABLE,
                    f"{path} is locked by another process ({lock_file(path)}): another "
                    "rotate.py is writing it",
                    "wait for it to finish, then run this again",
                ) from None
            time.sleep(0.05)
    _held[key] = fd


def release_env_file(path: Path) -> None:
    fd = _held.pop(path.resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor releases the flock


def update_env_file(
    path: Path,
    values: Mapping[str, str | None],
    expect: Mapping[str, str | None] | None = None,
    wait: float = LOCK_WAIT,
) -> None:
    """Set (None: remove) keys: under the env file's lock, written to a 0600 copy through
    python-dotenv, then renamed over it. With `expect`, the file must still hold those values
    (None: not hold the key), or nothing is written (EnvFileBusy)."""
    held = path.resolve() in _held
    if not held:
        hold_env_file(path, wait)
    try:
        _update_locked(path, values, expect)
    finally:
        if not held:
            release_env_file(path)


def _update_locked(
    path: Path, values: Mapping[str, str | None], expect: Mapping[str, str | None] | None
) -> None:
    text = path.read_text()
    if expect:
        current = dotenv_values(path)
        changed = sorted(key for key, value in expect.items() if current.get(key) != value)
        if changed:
            raise EnvFileBusy(
                changed[0],
                f"changed in {path} since this run read it (another rotate.py, or an edit)",
                "nothing was written and no host changed: run rotate.py again",
            )
    fd, staging = tempfile.mkstemp(prefix=".flowerbed-", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "w") as copy:
            copy.write(text)
        for key, value in values.items():
            if value is None:
                if key in dotenv_values(staging):
                    unset_key(staging, key)
            else:
                quote = "never" if UNQUOTED.fullmatch(value) else "always"
                set_key(staging, key, value, quote_mode=quote)
        os.chmod(staging, 0o600)
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)
