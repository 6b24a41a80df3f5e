"""Flower's own login, which only nginx holds: no process is trusted for its group alone.

Flower's socket directory is open to nginx's group, and on many hosts other programs (PHP, an
app) run as nginx's user too. So with logins at nginx (flower_auth_mode = 'basic'), Flower
still checks a login of its own (FLOWER_BASIC_AUTH, and with it Flower's own cross-site
checks): one random password, made on the host and never sent anywhere, kept in two root-only
files in Flower's config directory. systemd reads one into Flower's environment; nginx's
master process (root) reads the other as an include and sends the login with every request it
passes to Flower. A process of nginx's user reaches the socket but not the login: 401.

The files are made once, together, and made again (both) when either is missing; Flower
restarts and nginx reloads only then.
"""

from __future__ import annotations

from pyinfra import host, state
from pyinfra.api import StringCommand, operation
from pyinfra.api.operation import OperationMeta

from . import facts
from .hostfiles import PathStates, mark_changed
from .settings import Flower
from .shell import command

USER = "flowerbed-proxy"
# argv: ENV_FILE NGINX_INCLUDE. token_urlsafe's alphabet needs no quoting in either file.
MAKE = """
import base64, os, secrets, sys
user, password = sys.argv[3], secrets.token_urlsafe(32)
token = base64.b64encode(f"{user}:{password}".encode()).decode()
for path, text in ((sys.argv[1], f"FLOWER_BASIC_AUTH={user}:{password}\\n"),
                   (sys.argv[2], f'proxy_set_header Authorization "Basic {token}";\\n')):
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, text.encode())
    os.fsync(fd)
    os.close(fd)
    os.replace(path + ".new", path)
"""


def env_files(flower: Flower, auth_mode: str) -> list[str]:
    """Flower's environment files: the operator's secrets, and with logins at nginx the proxy
    login made on the host (the health check reads the same files)."""
    return [flower.env_file, *([flower.proxy_login_env] if auth_mode == "basic" else [])]


def make_command(flower: Flower) -> StringCommand:
    paths = (flower.proxy_login_env, flower.proxy_login_nginx)
    return command("/usr/bin/python3", "-IS", "-c", MAKE, *paths, USER)


def proxy_login(flower: Flower) -> OperationMeta:
    facts.expect(PathStates, paths=(flower.proxy_login_env, flower.proxy_login_nginx))
    return proxy_login_files(
        name="Flower's login for nginx alone (made on the host)", flower=flower
    )


@operation()
def proxy_login_files(flower: Flower):
    """Both root-only files of Flower's proxy login exist (made together on the host)."""
    paths = (flower.proxy_login_env, flower.proxy_login_nginx)
    current = facts.ask(PathStates, paths=paths)
    if all(current.get(path) for path in paths):
        host.noop("Flower's proxy login exists")
        return
    if state.is_executing:
        mark_changed(*paths)
    yield make_command(flower)
