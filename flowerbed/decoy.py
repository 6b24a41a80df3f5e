"""An unknown user costs the same as a known one (issue 19): no login name can be told from
another by how fast nginx refuses it.

nginx's auth_basic answers "user not found" without hashing anything, and a wrong password of
a real user after one bcrypt check (~60 ms at cost 10): timing alone would list the logins.
So:
- every htpasswd ends with the decoy's line, `flowerbed+decoy`: a cost-10 bcrypt hash of a
  random password that is never kept (`+` is outside the user-name grammar, so it is never a
  login's name). The other Flowers' login names on the host get the decoy's hash in each
  htpasswd (`others`), so a login of one Flower tried at another's path costs one check there
  and never gets in;
- /etc/nginx/flowerbed-users.map (root:www-data 0640) names the logins, each as an exact,
  case-sensitive regex (`"~\\Aalice\\z"`: `\\z`, not `$`, which also matches before a final
  newline; the name re.escape'd, so `a.b` is not `axb`);
- for any other name, Debian's headers-more module (`more_set_input_headers`, in
  libnginx-mod-http-headers-more-filter) replaces the Authorization header with the decoy's
  name and a fixed wrong password: auth_basic runs one bcrypt check for every name, and the
  decoy never logs in. A request without a login keeps its (absent) header: refused without a
  check, as before. The access log, the throttles and fail2ban's counter still see the name and
  the source that were sent ($remote_user is read before the header is replaced).

Only the map reloads nginx (a new name); nginx reads the htpasswd at every request, so a new
password reloads nothing.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable

import bcrypt

from .auth import BCRYPT_ROUNDS, HTPASSWD_GROUP, bcrypt_cost
from .hostfiles import Absent, RootFile, root_files
from .inputs.logins import USER_NAME
from .render import render

DECOY_USER = "flowerbed+decoy"  # '+' is outside USER_NAME: never a login's name
USERS_MAP = "/etc/nginx/flowerbed-users.map"
HEADERS_MORE_PACKAGE = "libnginx-mod-http-headers-more-filter"
# What nginx checks for any name not in the map: the decoy with a password its hash never has
# (the hash is of a random password nobody keeps). Fixed, so the header is the same every time.
DECOY_PASSWORD = "flowerbed-decoy-is-never-a-login"
DECOY_LOGIN = f"{DECOY_USER}:{DECOY_PASSWORD}".encode()
DECOY_AUTHORIZATION = "Basic " + base64.b64encode(DECOY_LOGIN).decode()
# The one guard line: every request's Authorization header is the map's answer (the sent one for
# a login or no login, the decoy's for any other name).
REWRITE = 'more_set_input_headers "Authorization: $flowerbed_authorization";'
BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
MAP_MODE = "640"

# one new decoy hash per run, for every htpasswd that has none (its password is never kept)
_new_hash: list[str] = []


def decoy_hash(current: str | None) -> str:
    """The decoy's hash: the current one while it is a bcrypt hash of flowerbed's cost, else a
    new hash of a random password that is forgotten at once."""
    if current and BCRYPT_HASH.fullmatch(current) and bcrypt_cost(current) == BCRYPT_ROUNDS:
        return current
    if not _new_hash:
        password = secrets.token_urlsafe(32).encode()
        _new_hash.append(bcrypt.hashpw(password, bcrypt.gensalt(BCRYPT_ROUNDS)).decode())
    return _new_hash[0]


def decoy_lines(own: Iterable[str], others: Iterable[str], current_decoy: str | None) -> str:
    """The htpasswd's tail: each other Flower's login name (not one of `own`) with the decoy's
    hash, then the decoy's own line."""
    hashed = decoy_hash(current_decoy)
    own = set(own)
    names = [name for name in dict.fromkeys(others) if name not in own]
    return "".join(f"{name}:{hashed}\n" for name in [*names, DECOY_USER])


def name_pattern(name: str) -> str:
    """A login name as an exact, case-sensitive nginx map regex, quoted: `"~\\Aalice\\z"`."""
    if not USER_NAME.fullmatch(name):  # (checked long before: this map must never be misread)
        raise ValueError(f"not a login name: {name!r}")
    return f'"~\\A{re.escape(name)}\\z"'


def users_map_text(names: Iterable[str]) -> str:
    """/etc/nginx/flowerbed-users.map: one line per login name, every Flower's on the host."""
    lines = "".join(f"{name_pattern(name)} 1;\n" for name in sorted(set(names)))
    return (
        "# Managed by flowerbed: the dashboard's login names (flowerbed/decoy.py). Any other\n"
        "# name is checked as the decoy's, so it costs one bcrypt check like a login.\n" + lines
    )


def decoy_context() -> dict:
    """What the templates need: the map's path, the decoy's header and the guard's line."""
    return {
        "users_map": USERS_MAP,
        "decoy_authorization": DECOY_AUTHORIZATION,
        "decoy_rewrite": REWRITE,
    }


def decoy_http_text() -> str:
    """The http-level maps (also what the unit tests run in a real nginx)."""
    return render("nginx-dashboard-decoy.conf.j2", **decoy_context())


def users_map(names: Iterable[str]):
    """The map file, root:www-data 0640; its change (a new name) is what reloads nginx."""
    entry = RootFile(USERS_MAP, users_map_text(names), mode=MAP_MODE, group=HTPASSWD_GROUP)
    return root_files("Login names for the decoy (an unknown user costs a bcrypt check)", [entry])


def no_users_map():
    return root_files("No login names map (Flower does OAuth)", [Absent(USERS_MAP)])
