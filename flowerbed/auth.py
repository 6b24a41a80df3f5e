"""Dashboard logins: basic auth at nginx, with only bcrypt hashes on the hosts.

The logins are read and checked by flowerbed.inputs.logins. Each host gets one file,
root:www-data 0640, of `user:bcrypt-hash` lines. A hash stays as long as it matches its password,
so a run with unchanged logins changes nothing; a changed password gets a new hash, a removed
user its line removed; the file ends with the decoy's line (flowerbed.decoy). The host's file
is read without printing it and compared here. Within one run a login gets one new hash for
every host that needs one, and each (password, hash) pair is checked once: bcrypt is slow on
purpose, so a run costs one check per distinct hash, not one per host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import bcrypt
from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta

from . import facts, quiet
from .hostfiles import PathStates
from .inputs.logins import Login
from .inputs.secrets import Secret
from .secrets import secret_file

HTPASSWD = "/etc/nginx/flowerbed.htpasswd"
HTPASSWD_GROUP = "www-data"  # nginx's workers read it at every request
# bcrypt's cost: nginx checks the password of EVERY request (basic auth has no session), in its
# event loop, so a UI polling every few seconds pays one check per poll, and a check blocks the
# worker meanwhile. Measured on the lab's cores (benchmarks/login_latency.py): cost 10 = ~60 ms
# a check, 12 = ~250 ms (and 4x the CPU a guess costs). 10 is OWASP's floor for bcrypt; guessing
# online is throttled per source (nginx_login_failures_*), and a leaked file faces long random
# passwords. A changed cost re-hashes every login at the next deploy.
BCRYPT_ROUNDS = 10


def htpasswd_lines(
    logins: tuple[Login, ...], current: Mapping[str, str], others: Iterable[str] = ()
) -> str:
    """`user:hash` lines, keeping each current hash that still matches its password; then the
    other Flowers' login names on the host (`others`) and the decoy, all with the decoy's hash
    (flowerbed.decoy: an unknown name costs one bcrypt check and never gets in)."""
    from .decoy import DECOY_USER, decoy_lines  # (decoy builds on this module)

    own = "".join(f"{login.user}:{_hash(login, current.get(login.user))}\n" for login in logins)
    return own + decoy_lines((login.user for login in logins), others, current.get(DECOY_USER))


# this run's bcrypt work, by secret: kept in memory only, never printed
_checked: dict[tuple[str, str, str], bool] = {}  # (user, password, hash) -> matches
_hashed: dict[tuple[str, str], str] = {}  # (user, password) -> the new hash every host gets


def _hash(login: Login, current: str | None) -> str:
    if current and bcrypt_cost(current) == BCRYPT_ROUNDS:
        key = (login.user, login.password, current)
        if key not in _checked:
            _checked[key] = _matches(login, current)
        if _checked[key]:
            return current
    key = (login.user, login.password)
    if key not in _hashed:
        _hashed[key] = bcrypt.hashpw(
            login.password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)
        ).decode()
    return _hashed[key]


def bcrypt_cost(hashed: str) -> int | None:
    """The cost in a `$2b$10$...` hash; None for anything else."""
    parts = hashed.split("$")
    return int(parts[2]) if len(parts) == 4 and parts[2].isdigit() else None


def _matches(login: Login, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(login.password.encode(), hashed.encode())
    except ValueError:  # not a bcrypt hash (e.g. written by hand): replace it
        return False


def parse_htpasswd(text: str) -> dict[str, str]:
    lines = (line.partition(":") for line in text.splitlines())
    return {user: hashed for user, colon, hashed in lines if colon}


def htpasswd(
    name: str, path: str, logins: tuple[Login, ...], others: tuple[str, ...] = ()
) -> OperationMeta:
    """The op below, its file's owner and mode checked with the host's other facts."""
    facts.expect(PathStates, paths=(path,), digests=False)
    quiet.expect_read(path)
    return htpasswd_file(name=name, path=path, logins=logins, others=others)


@operation()
def htpasswd_file(path: str, logins: tuple[Login, ...], others: tuple[str, ...] = ()):
    """
    Ensure `path` holds a bcrypt hash for each login (root:www-data 0640), re-hashing only
    the passwords that changed, then the decoy's line (flowerbed.decoy; with the other Flowers'
    login names `others`); nothing about the logins reaches pyinfra's output.
    """
    on_disk = facts.ask(PathStates, paths=(path,), digests=False).get(path)
    text = quiet.read(path) if on_disk else ""
    content = htpasswd_lines(logins, parse_htpasswd(text), others)
    owner = on_disk and (on_disk.user, on_disk.group, on_disk.mode)
    if owner == ("root", HTPASSWD_GROUP, 0o640) and text == content:
        host.noop(f"{path} is up to date (content not shown)")
        return
    secret = Secret("the dashboard logins", content)
    yield from secret_file._inner(path, secret, user="root", group=HTPASSWD_GROUP, mode=640)
