"""Flower's own login, which only nginx holds: no process is trusted for its group alone.

Flower's socket directory is open to nginx's group, and on many hosts other programs (PHP, an
app) run as nginx's user too. So with logins at nginx (flower_auth_mode = 'basic'), Flower
still checks a login of its own (FLOWER_BASIC_AUTH, and with it Flower's own cross-site
checks): one random password, made on the host and never sent anywhere, kept in two root-only
files in Flower's config directory. systemd reads one into Flower's environment; nginx's
master process (root) reads the other as an include and sends the login with every request it
passes to Flower. A process of nginx's user reaches the socket but not the login: 401.

The files are made once, together, and made again (both) when either is missing, not root's
0600 files or not the same login; nginx (if it runs) reloads and Flower restarts only then. The
edge asks for them too, so nginx never includes a file that is not there.
"""

from __future__ import annotations

from pyinfra import host, state
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from . import facts
from .hostfiles import Absent, mark_changed, root_files
from .nginx import CHECK_AND_RELOAD
from .settings import Flower
from .shell import command

USER = "flowerbed-proxy"
# argv: ENV_FILE NGINX_INCLUDE USER. Each file is written whole under a name of its own (0600
# from creation) and renamed into place; token_urlsafe's alphabet needs no quoting in either.
MAKE = """
import base64, os, secrets, sys, tempfile
env, include, user = sys.argv[1:4]
password = secrets.token_urlsafe(32)
token = base64.b64encode(f"{user}:{password}".encode()).decode()
for path, text in ((env, f"FLOWER_BASIC_AUTH={user}:{password}\\n"),
                   (include, f'proxy_set_header Authorization "Basic {token}";\\n')):
    fd, new = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".proxy-login-")
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.replace(new, path)
"""
# argv: ENV_FILE NGINX_INCLUDE. Prints one word, never the login: ok (both root's, 0600 regular
# files, holding the same login), missing, or bad.
CHECK = """
import base64, os, stat, sys
try:
    found = [os.lstat(path) for path in sys.argv[1:3]]
except FileNotFoundError:
    sys.exit(print("missing"))
if any(not stat.S_ISREG(f.st_mode) or f.st_uid or stat.S_IMODE(f.st_mode) != 0o600 for f in found):
    sys.exit(print("bad"))
with open(sys.argv[1]) as env, open(sys.argv[2]) as include:
    login = env.read().strip().partition("=")[2]
    sent = include.read()
token = base64.b64encode(login.encode()).decode()
print("ok" if sent == f'proxy_set_header Authorization "Basic {token}";\\n' else "bad")
"""
# nginx, if it runs, sends the new login from now on (Flower restarts after this operation)
RELOAD_NGINX = StringCommand(
    "if", command("systemctl", "is-active", "--quiet", "nginx"), ";", "then", CHECK_AND_RELOAD, ";",
    "fi",
)  # fmt: skip


def env_files(flower: Flower, auth_mode: str) -> list[str]:
    """Flower's environment files: the operator's secrets, and with logins at nginx the proxy
    login made on the host (the health check reads the same files)."""
    return [flower.env_file, *([flower.proxy_login_env] if auth_mode == "basic" else [])]


def login_paths(flower: Flower) -> tuple[str, str]:
    return flower.proxy_login_env, flower.proxy_login_nginx


class ProxyLoginState(FactBase):
    """ok, missing or bad (not root's 0600 files, or not the same login): never the login."""

    def command(self, paths: tuple[str, str]) -> StringCommand:
        return command("/usr/bin/python3", "-IS", "-c", CHECK, *paths)

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else "missing"


def proxy_login(flower: Flower) -> OperationMeta:
    """Flower's login for nginx alone exists; made (again) when missing or inconsistent."""
    facts.expect(ProxyLoginState, paths=login_paths(flower))
    name = "Flower's login for nginx alone (made on the host)"
    return proxy_login_files(name=name, flower=flower)


@operation()
def proxy_login_files(flower: Flower):
    """Both root-only files of Flower's proxy login exist and hold the same login."""
    found = facts.ask(ProxyLoginState, paths=login_paths(flower))
    if found == "ok":
        host.noop("Flower's proxy login is in place")
        return
    if state.is_executing:
        mark_changed(*login_paths(flower))
    yield command("/usr/bin/python3", "-IS", "-c", MAKE, *login_paths(flower), USER)
    yield RELOAD_NGINX


def no_proxy_login(flower: Flower) -> OperationMeta:
    """Flower does the login itself (OAuth): no proxy login is left behind."""
    return root_files(
        "No proxy login (Flower does OAuth)", [Absent(p) for p in login_paths(flower)]
    )
