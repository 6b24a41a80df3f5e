"""Flower itself: how it is installed and run (Flower) and its own options (FlowerOptions),
with the keys people try that flowerbed sets itself (MANAGED_KEYS)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..memory import memory_size
from ..resources import LOCKS, is_local_dir, local_path
from ..validation import SettingsError, flower_auth_problem, has_credentials, shown, split_url
from .checks import (
    DAY,
    Check,
    absolute_path,
    account,
    boolean,
    env_mapping,
    env_name,
    expect,
    integer,
    name,
    one_of,
    service_name,
    setting,
    string_list,
    text,
    url,
)

if TYPE_CHECKING:
    from . import Settings


# redis+socket:///run/redis/redis-server.sock: kombu's Redis over a unix socket (Flower's user
# must be allowed to connect: the socket's group)
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps", "pyamqp")


TASK_COLUMNS = (
    "name", "uuid", "state", "args", "kwargs", "result", "received", "started", "runtime",
    "worker", "exchange", "routing_key", "retries", "revoked", "exception", "expires", "eta",
)  # fmt: skip


AUTH_PROVIDERS = (
    "flower.views.auth.GoogleAuth2LoginHandler",
    "flower.views.auth.GithubLoginHandler",
    "flower.views.auth.GitLabLoginHandler",
    "flower.views.auth.OktaLoginHandler",
)


# dbm backends append their own suffix: db="flower.db" would write flower.db.db
DBM_SUFFIXES = (".db", ".dat", ".dir", ".bak", ".sqlite", ".sqlite3")


# Keys people try that flowerbed sets itself, or that Flower does not have.
MANAGED_KEYS = {
    "flower_port": "Flower listens on a unix socket only (flower_service sets its path)",
    "flower_address": "Flower listens on a unix socket only, never on an address",
    "flower_unix_socket": "the socket path follows from flower_service (/run/<service>/)",
    "flower_xheaders": "a unix-socket server ignores xheaders; the proxy sets them",
    "flower_certfile": "TLS ends at the reverse proxy (issue 4), not in Flower",
    "flower_keyfile": "TLS ends at the reverse proxy (issue 4), not in Flower",
    "flower_ca_certs": "TLS ends at the reverse proxy (issue 4), not in Flower",
    "flower_conf": "flowerbed writes Flower's config file itself (flower_config_dir)",
    "flower_debug": "debug mode shows tracebacks to anyone who reaches Flower",
    "flower_format_task": "a Python function cannot come from data; ship it in flower_app",
    "flower_broker": "the broker URL holds a password: name its variable in flower_broker_url_env",
    "flower_broker_url": "the broker URL holds a password: name its variable in "
    "flower_broker_url_env",
    "flower_broker_api": "the broker API URL holds a password: name its variable in "
    "flower_broker_api_env",
    "flower_oauth2_secret": "a secret: name its variable in flower_oauth2_secret_env",
    "flower_cookie_secret": "a secret: name its variable in flower_cookie_secret_env",
    "flower_cors_enabled": "Flower has no such option",
    "flower_auth_module": "Flower has no such option (see flower_auth_provider)",
    "flower_broker_class": "Flower has no such option",
}


def task_columns() -> Check:
    def check(key: str, value: Any) -> str | None:
        if value is None:
            return None
        expect(key, value, str, "comma-separated column names")
        unknown = [c for c in (c.strip() for c in value.split(",")) if c not in TASK_COLUMNS]
        if unknown:
            raise SettingsError(key, f"unknown columns {unknown}", f"use only {TASK_COLUMNS}")
        return ",".join(c.strip() for c in value.split(","))

    return check


def url_prefix() -> Check:
    def check(key: str, value: Any) -> str:
        expect(key, value, str, "a path prefix like 'flower' ('' = served at /)")
        # segments like 'flower' or 'ops/flower': no '.', '..', '//', dot-files or escapes
        segment = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
        if not re.fullmatch(rf"({segment}(/{segment})*)?", value.strip("/")):
            raise SettingsError(
                key,
                f"{shown(value)} is not a URL path of plain segments (letters, digits, ._~-; no "
                "'.' or '..' segments)",
                "use e.g. 'flower' or 'ops/flower'",
            )
        return value.strip("/")

    return check


def db_name() -> Check:
    def check(key: str, value: Any) -> str:
        text(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", "a file name (no '/')")(key, value)
        if value.endswith(DBM_SUFFIXES):
            raise SettingsError(
                key,
                f"{value!r} ends with a dbm suffix; the dbm backend appends its own ({value}.db)",
                f"drop the suffix: {key} = {value.rsplit('.', 1)[0]!r}",
            )
        return value

    return check


def allowed_emails() -> Check:
    """Flower's --auth (the same rule in 2.1 and 2.2, flower/utils/authentication.py): exact
    e-mails joined by '|', or one e-mail with a single '.*' wildcard before the '@'."""
    hint = "an e-mail, 'a@example.com|b@example.com' or '.*@example.com' ('' = no OAuth)"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if value and (problem := flower_auth_problem(value)):
            raise SettingsError(
                key,
                f"{shown(value)} is not a pattern Flower matches as meant ({problem}), so Flower "
                "would lock everyone out or not start; it is not a regexp",
                f"set {key} to {hint}",
            )
        return value

    return check


# pip fetches the app over these only: encrypted, and authenticated by key or by a netrc
APP_SOURCE_SCHEMES = ("git+https", "git+ssh", "https")
NO_CREDENTIALS_IN_URL = (
    "let the hosts authenticate, not the URL: git+ssh://git@host/... with a deploy key, a "
    "token-free mirror, or https with the token in root's ~/.netrc (or git's credential "
    "helper) on the hosts; or a local checkout (flower_app_source = 'path/to/app')"
)


def app_source() -> Check:
    """Where pip gets the app: a URL in it must not carry a token (it would be in `ps` and in
    pip's world-readable direct_url.json), neither as user:password@ nor in the query string;
    `git+ssh://git@host` (a user, no secret) is fine; only encrypted schemes."""
    hint = (
        "a local Python project's directory, a package spec, or a git+https://, git+ssh:// or "
        "https:// URL without a token"
    )

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        for found in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", value):
            parts = split_url(key, found, "git+https://git.example.com/proj.git@<commit>")
            if parts.scheme.lower() not in APP_SOURCE_SCHEMES:
                raise SettingsError(
                    key,
                    f"fetches the app over {parts.scheme}://, which is not one of "
                    f"{', '.join(APP_SOURCE_SCHEMES)} (plain HTTP or git:// can be read and "
                    "changed on the way)",
                    "use git+https://... or git+ssh://git@host/..., pinned to a commit",
                )
            user, colon, _ = parts.netloc.rpartition("@")[0].partition(":")
            if has_credentials(parts) and (colon or not parts.scheme.endswith("ssh")):
                raise SettingsError(
                    key,
                    "the URL carries credentials (a token or user:password@), which would show in "
                    "`ps` and in pip's world-readable direct_url.json (not shown)",
                    NO_CREDENTIALS_IN_URL,
                )
            if parts.query:
                raise SettingsError(
                    key,
                    "the URL has a query string (like ?private_token=...), which would show in "
                    "`ps` and in pip's world-readable direct_url.json (not shown)",
                    NO_CREDENTIALS_IN_URL,
                )
        return value

    return check


CLAIM_KINDS = ("user", "group", "unit", "dir")
CLAIM_HINT = '"user:NAME", "group:NAME", "unit:NAME" or "dir:/PATH"'


def claimed_name() -> Check:
    """One of flower_names_claimed: a kind and a name, each name in its key's own grammar."""
    grammar = {"user": name(), "group": name(), "unit": service_name(),
               "dir": absolute_path()}  # fmt: skip

    def check(key: str, value: Any) -> str:
        expect(key, value, str, CLAIM_HINT)
        kind, colon, claimed = value.partition(":")
        if not colon or kind not in CLAIM_KINDS:
            raise SettingsError(
                key, f"{shown(value)} is not a kind and a name", f"write it as {CLAIM_HINT}"
            )
        if kind == "unit":
            claimed = claimed.removesuffix(".service")
        return f"{kind}:{grammar[kind](key, claimed)}"

    return check


@dataclass(frozen=True)
class FlowerOptions:
    """Flower's own options, under their real names, written to flowerconfig.py."""

    url_prefix: str = setting(url_prefix())
    max_tasks: int = setting(integer(minimum=1, maximum=10_000_000))
    max_workers: int = setting(integer(minimum=1, maximum=100_000))
    purge_offline_workers: int | None = setting(
        integer(minimum=1, maximum=DAY * 365, optional=True)
    )
    persistent: bool = setting(boolean())
    state_save_interval: int = setting(integer(maximum=DAY * 1000))  # ms
    db: str = setting(db_name())
    read_only: bool = setting(boolean())
    natural_time: bool = setting(boolean())
    tasks_columns: str | None = setting(task_columns())
    inspect_timeout: int = setting(integer(minimum=1, maximum=60_000))  # ms
    enable_events: bool = setting(boolean())
    auto_refresh: bool = setting(boolean())
    auth: str = setting(allowed_emails())
    auth_provider: str = setting(one_of(AUTH_PROVIDERS))
    oauth2_key: str = setting(text())
    oauth2_redirect_uri: str = setting(url(("https", "http")))

    prefix = "flower_"


@dataclass(frozen=True)
class Flower:
    """Where and how Flower is installed and run, and where its secrets come from."""

    version: str = setting(text(r"\d+\.\d+\.\d+", "a Flower version like '2.2.0'"))
    user: str = setting(account())
    group: str = setting(account())
    socket_clients: tuple[str, ...] = setting(string_list(name()))
    service: str = setting(service_name())
    config_dir: str = setting(absolute_path(inside_roots=True))
    install_dir: str = setting(absolute_path(inside_roots=True))
    app: str = setting(text(r"([\w.]+(:[\w.]+)?)?", "a Celery app like 'proj.celery:app'"))
    app_source: str = setting(app_source())
    app_workdir: str = setting(absolute_path(optional=True))
    names_claimed: tuple[str, ...] = setting(string_list(claimed_name()))
    unauthenticated_api: bool = setting(boolean())
    restart_sec: int = setting(integer(minimum=1, maximum=3600))
    start_limit_burst: int = setting(integer(minimum=1, maximum=1000))
    start_limit_interval_sec: int = setting(integer(minimum=1, maximum=DAY))
    stop_timeout_sec: int = setting(integer(minimum=1, maximum=3600))
    memory_max: str = setting(memory_size())
    healthcheck_min_workers: int = setting(integer(maximum=100_000))
    healthcheck_timeout: int = setting(integer(minimum=1, maximum=3600))
    broker_url_env: str = setting(env_name())
    broker_api_env: str = setting(env_name(optional=True))
    basic_auth: tuple[tuple[str, str], ...] = setting(env_mapping())
    oauth2_secret_env: str = setting(env_name(optional=True))
    cookie_secret_env: str = setting(env_name(optional=True))

    prefix = "flower_"

    @property
    def lock_file(self) -> Path:
        return LOCKS / f"flower-{self.version}.txt"

    @property
    def state_dir(self) -> str:
        return f"/var/lib/{self.service}"

    @property
    def runtime_dir(self) -> str:
        return f"/run/{self.service}"

    @property
    def socket(self) -> str:
        return f"{self.runtime_dir}/{self.service}.sock"

    @property
    def unit_name(self) -> str:
        return f"{self.service}.service"

    @property
    def unit_file(self) -> str:
        return f"/etc/systemd/system/{self.unit_name}"

    @property
    def env_file(self) -> str:
        return f"{self.config_dir}/{self.service}.env"

    @property
    def config_file(self) -> str:
        return f"{self.config_dir}/flowerconfig.py"

    @property
    def proxy_login_env(self) -> str:
        """Flower's own basic auth (FLOWER_BASIC_AUTH): the login only nginx sends; root-only."""
        return f"{self.config_dir}/{self.service}-proxy-login.env"

    @property
    def proxy_login_nginx(self) -> str:
        """The same login as nginx sends it (an include its master reads as root); root-only."""
        return f"{self.config_dir}/{self.service}-proxy-login.nginx.conf"

    @property
    def venvs_dir(self) -> str:
        return f"{self.install_dir}/venvs"

    @property
    def venv(self) -> str:
        """A symlink to the venv Flower runs from; switched only once a new venv is complete."""
        return f"{self.install_dir}/venv"

    @property
    def workdir(self) -> str:
        return self.app_workdir or self.state_dir

    def names(self) -> tuple[tuple[str, str, str], ...]:
        """Flower's names on a host, each (kind, name, the key that chooses it), as
        flower_names_claimed spells them: the host decides whether each may be Flower's
        (flowerbed/ownership.py). The app's working directory is only read, never made."""
        names = [
            ("user", self.user, "flower_user"),
            ("group", self.group, "flower_group"),
            ("unit", self.service, "flower_service"),
            ("dir", self.config_dir, "flower_config_dir"),
            ("dir", self.install_dir, "flower_install_dir"),
            ("dir", self.state_dir, "flower_service"),
            ("dir", self.runtime_dir, "flower_service"),
        ]
        if self.app_workdir:
            names.append(("dir", self.app_workdir, "flower_app_workdir"))
        return tuple({(kind, name): (kind, name, key) for kind, name, key in names}.values())

    @property
    def app_is_local(self) -> bool:
        """A path (package specs and git/https URLs never hold a bare '/')."""
        return "/" in self.app_source and "://" not in self.app_source

    @property
    def app_is_git(self) -> bool:
        return self.app_source.startswith("git+")


def check_flower(s: Settings) -> Iterator[SettingsError]:
    """Rules between Flower's keys."""
    f, o = s.flower, s.options
    if not f.lock_file.is_file():
        have = sorted(p.stem.removeprefix("flower-") for p in LOCKS.glob("flower-*.txt"))
        yield SettingsError(
            "flower_version",
            f"no lock file locks/{f.lock_file.name} (locked versions: {have})",
            "pick a locked version, or add locks/flower-<version>.in and run locks/compile.py",
        )
    if bool(f.app) != bool(f.app_source):
        yield SettingsError(
            "flower_app" if f.app_source else "flower_app_source",
            "flower_app (the -A app) and flower_app_source (where to install it from) go together",
            "set both, or neither for app-less mode",
        )
    if f.app_is_local and (problem := local_app_problem(_local_app_dir(f.app_source))):
        yield SettingsError("flower_app_source", f"{f.app_source!r} {problem}", LOCAL_APP_FIX)
    if o.state_save_interval and not o.persistent:
        yield SettingsError(
            "flower_state_save_interval",
            "saving state needs flower_persistent = True",
            "set flower_persistent = True or flower_state_save_interval = 0",
        )
    if o.auth and not (o.auth_provider and o.oauth2_key and o.oauth2_redirect_uri):
        yield SettingsError(
            "flower_auth",
            "OAuth needs flower_auth_provider, flower_oauth2_key and flower_oauth2_redirect_uri",
            "set all three, or flower_auth = '' to turn OAuth off",
        )
    if o.auth and not (f.oauth2_secret_env and f.cookie_secret_env):
        yield SettingsError(
            "flower_oauth2_secret_env",
            "OAuth needs its client secret and a fixed cookie secret (or sessions die on restart)",
            "name both variables: flower_oauth2_secret_env and flower_cookie_secret_env",
        )
    if f.healthcheck_min_workers and o.auth:
        yield SettingsError(
            "flower_healthcheck_min_workers",
            "with OAuth (flower_auth) Flower's API needs a browser session: the check cannot list "
            "workers",
            "set flower_healthcheck_min_workers = 0 (the check then only asks /healthcheck)",
        )
    names = {f"{kind}:{name}" for kind, name, _ in f.names()}
    for index, claimed in enumerate(f.names_claimed):
        if claimed not in names:
            yield SettingsError(
                f"flower_names_claimed[{index}]",
                f"{claimed!r} is not one of Flower's names on a host (its user, group, unit, "
                "config, venv, state, socket and working directories)",
                f"claim only names Flower uses: {', '.join(sorted(names))}",
            )
    if f.socket_clients and f.user in f.socket_clients:
        yield SettingsError(
            "flower_socket_clients", "lists Flower's own user", f"remove {f.user!r} from the list"
        )


LOCAL_APP_FIX = (
    "point it at the top of your app's checkout, the directory holding its pyproject.toml "
    "or setup.py"
)
PROJECT_FILES = ("pyproject.toml", "setup.py")


def local_app_problem(directory: Path) -> str | None:
    """A local app directory is packed and uploaded to every host: only a Python project's
    top, and never a hidden directory or one inside one (~/.ssh, ~/.config/...)."""
    if not is_local_dir(directory):
        return "is not a directory"
    hidden = [part for part in directory.parts if part.startswith(".")]
    if hidden:
        return (
            f"is inside the hidden directory {hidden[0]!r} (like ~/.ssh): flowerbed never packs "
            "one and uploads it to every host"
        )
    if not any((directory / name).is_file() for name in PROJECT_FILES):
        return (
            f"has neither {' nor '.join(PROJECT_FILES)} at its top, so it is not a Python "
            "project pip can install (and all of it would be uploaded to every host)"
        )
    return None


def _local_app_dir(source: str) -> Path:
    return local_path(source)


def local_app_dir(flower: Flower) -> Path:
    return _local_app_dir(flower.app_source)
