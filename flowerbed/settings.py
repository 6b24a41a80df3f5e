"""The one validated data model every flowerbed module reads.

`load_settings(host.data.dict())` turns a host's data into frozen dataclasses, or raises
`SettingsError` naming the key, the problem and the fix. Every key has its default in
flowerbed/defaults.py (the repository's group_data/all.py), shipped with the package: data
only overrides them. Every key starts with `flower_`; a key with one of flowerbed's old names
(before the prefix) is an error naming its new name, unless it is the deploy's own key (see
renamed_keys).

A section is a frozen dataclass whose fields are data keys (`prefix + field name`); each field's
metadata holds the check that validates and normalises its value.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .probe import VERIFY
from .resources import DEFAULTS, LOCKS, local_path
from .validation import (
    Problems,
    SettingsError,
    flower_auth_problem,
    has_credentials,
    looks_like_a_secret,
    nginx_snippet_problem,
    privileged_group_problem,
    reject_control_characters,
    shown,
    split_url,
    system_directory_problem,
    system_service_problem,
    system_user_problem,
)

LOCKS_DIR = LOCKS

# Data keys under these prefixes belong to flowerbed: an unknown one is an error. Every other
# key (a consumer's own nginx_*, tls_*, fqdn ...) is left alone.
OWNED_PREFIXES = ("flower_", "flowerbed_")

# flowerbed's keys before they all moved under flower_ (issue 9): old name -> new name.
RENAMED = {
    old: f"flower_{old}"
    for old in (
        "egress_proxy", "egress_ca_certificates", "pip_index_url", "allowed_sources",
        "admin_sources", "acme_sources", "firewall_ssh_port", "firewall_rollback_seconds",
        "firewall_allow_ssh_from_anywhere", "firewall_allow_metrics_from_anywhere", "fqdn",
        "server_aliases", "monitoring_sources", "nginx_hsts_max_age",
        "nginx_hsts_include_subdomains", "nginx_proxy_read_timeout", "nginx_server_snippets",
        "nginx_login_failures_per_minute", "nginx_login_failures_burst",
        "nginx_requests_per_second", "nginx_requests_burst", "tls_acme_directory",
        "tls_acme_ca_bundle", "tls_email", "tls_challenge", "tls_dns_plugin",
        "tls_dns_credentials_env", "tls_dns_hook", "auth_mode", "auth_users_env",
        "verify_ca_bundle", "verify_summary_file", "verify_cert_min_days", "verify_exposure_max",
        "verify_min_workers_online", "verify_max_workers_offline", "verify_max_failed_tasks",
        "verify_max_task_seconds", "verify_max_queue_length", "verify_expected_tasks",
    )
}  # fmt: skip

BROKER_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps", "pyamqp")
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


DAY = 86400  # seconds

# Checks: each returns the normalised value or raises SettingsError.
Check = Callable[[str, Any], Any]


def _expect(key: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    # bool is an int in Python: never let True pass as a number
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        got = type(value).__name__ if key.endswith("_env") else shown(value)
        raise SettingsError(key, f"expected {what}, got {got}", f"set {key} to {what}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def boolean() -> Check:
    def check(key: str, value: Any) -> bool:
        _expect(key, value, bool, "True or False")
        return value

    return check


def integer(minimum: int = 0, maximum: int = 10**9, optional: bool = False) -> Check:
    """An integer from minimum to maximum: a sensible ceiling catches a unit mix-up (ms/s)."""
    hint = f"an integer from {minimum} to {maximum}" + (" or None" if optional else "")

    def check(key: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        _expect(key, value, int, hint)
        if value < minimum:
            raise SettingsError(key, f"{value} is below {minimum}", f"use {hint}")
        if value > maximum:
            raise SettingsError(key, f"{value} is above {maximum}", f"use {hint}")
        return value

    return check


def text(pattern: str = r".*", hint: str = "a string") -> Check:
    def check(key: str, value: Any) -> str:
        _expect(key, value, str, hint)
        if not re.fullmatch(pattern, value):
            raise SettingsError(key, f"{shown(value)} is not {hint}", f"set {key} to {hint}")
        return value

    return check


def name() -> Check:
    return text(r"[a-z_][a-z0-9_-]{0,31}", "a system user/group name like 'flower'")


def env_name(optional: bool = False) -> Check:
    """The NAME of a variable holding a secret; a value pasted here is never quoted back."""
    hint = "the NAME of an environment variable (e.g. 'FLOWERBED_BROKER_URL'), not its value"

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, hint)
        if optional and value == "" or re.fullmatch(r"[A-Z_][A-Z0-9_]*", value):
            return value
        what = "looks like a URL or a secret" if looks_like_a_secret(value) else "is not"
        raise SettingsError(
            key,
            f"{what}, not a variable name (the value is not shown)",
            f"put the value in .env (see .env.example) and set {key} to {hint}",
        )

    return check


def account(group: bool = False) -> Check:
    """A system user or group for flowerbed to create: never root or another service's."""
    problem = privileged_group_problem if group else system_user_problem

    def check(key: str, value: Any) -> str:
        name()(key, value)
        if found := problem(value):
            raise SettingsError(
                key, found, f"use an account of Flower's own, e.g. {key} = 'flower'"
            )
        return value

    return check


def service_name() -> Check:
    def check(key: str, value: Any) -> str:
        text(r"[a-z][a-z0-9-]{0,30}", "a unit name like 'flower'")(key, value)
        if found := system_service_problem(value):
            raise SettingsError(key, found, f"use a name of Flower's own, e.g. {key} = 'flower'")
        return value

    return check


def absolute_path(optional: bool = False) -> Check:
    """A directory flowerbed owns (root:root 0755): never a system or temporary directory."""

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, "an absolute path")
        if optional and value == "":
            return ""
        path = PurePosixPath(value)
        # these paths go into unit files and commands unquoted: plain characters only
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*", value) or {".", ".."} & set(value.split("/")):
            raise SettingsError(
                key, f"{shown(value)} is not an absolute path", "use a path like /opt/x"
            )
        if found := system_directory_problem(str(path)):
            raise SettingsError(key, found, "use a directory of Flower's own, like /opt/flower")
        return str(path)

    return check


def url(schemes: tuple[str, ...], optional: bool = True) -> Check:
    """A URL without credentials: it lands in world-readable config or on a command line."""

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, f"a URL ({'/'.join(schemes)})")
        if not value and optional:
            return ""
        example = f"{schemes[0]}://host.example.com:3128"
        parts = split_url(key, value, example)
        if parts.scheme not in schemes or not parts.hostname:
            raise SettingsError(
                key, f"{shown(value)} is not a {'/'.join(schemes)} URL", f"use e.g. {example}"
            )
        if has_credentials(parts):
            raise SettingsError(
                key,
                "the URL carries credentials (user:password@ or :password@), which would land in "
                "world-readable config or on a command line (not shown)",
                "use a proxy/mirror that authenticates by source address, without user:password@",
            )
        return value

    return check


def string_list(item: Check) -> Check:
    def check(key: str, value: Any) -> tuple[str, ...]:
        _expect(key, value, (list, tuple), "a list")
        return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))

    return check


def env_mapping() -> Check:
    """{"user": "ENV_VAR_WITH_THE_PASSWORD", ...}"""

    def check(key: str, value: Any) -> tuple[tuple[str, str], ...]:
        _expect(key, value, dict, "a dict of user name -> environment variable name")
        for user in value:
            # a "user:password" pasted as the user name is not quoted back
            if not isinstance(user, str) or not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", user):
                raise SettingsError(
                    key,
                    "has a user name that is not letters, digits and ._@- (not shown)",
                    f'set {key} = {{"alice": "FLOWERBED_FLOWER_PASSWORD_ALICE"}}',
                )
        return tuple((u, env_name()(f"{key}[{u!r}]", v)) for u, v in value.items())

    return check


def one_of(choices: tuple[str, ...], optional: bool = True) -> Check:
    def check(key: str, value: Any) -> str:
        _expect(key, value, str, "a string")
        if value not in choices and not (optional and value == ""):
            raise SettingsError(key, f"{value!r} is not supported", f"use one of {choices}")
        return value

    return check


def task_columns() -> Check:
    def check(key: str, value: Any) -> str | None:
        if value is None:
            return None
        _expect(key, value, str, "comma-separated column names")
        unknown = [c for c in (c.strip() for c in value.split(",")) if c not in TASK_COLUMNS]
        if unknown:
            raise SettingsError(key, f"unknown columns {unknown}", f"use only {TASK_COLUMNS}")
        return ",".join(c.strip() for c in value.split(","))

    return check


def url_prefix() -> Check:
    def check(key: str, value: Any) -> str:
        _expect(key, value, str, "a path prefix like 'flower' ('' = served at /)")
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
        _expect(key, value, str, hint)
        if value and (problem := flower_auth_problem(value)):
            raise SettingsError(
                key,
                f"{shown(value)} is not a pattern Flower matches as meant ({problem}), so Flower "
                "would lock everyone out or not start; it is not a regexp",
                f"set {key} to {hint}",
            )
        return value

    return check


def app_source() -> Check:
    """Where pip gets the app: a URL in it must not carry a token (it would be in `ps` and in
    pip's world-readable direct_url.json); `git+ssh://git@host` (a user, no secret) is fine."""

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, "a local directory, a git URL or a package spec")
        for found in re.findall(r"[a-z][a-z0-9+.-]*://\S+", value):
            parts = split_url(key, found, "git+https://git.example.com/proj.git@<commit>")
            user, colon, _ = parts.netloc.rpartition("@")[0].partition(":")
            if has_credentials(parts) and (colon or not parts.scheme.endswith("ssh")):
                raise SettingsError(
                    key,
                    "the URL carries credentials (a token or user:password@), which would show in "
                    "`ps` and in pip's world-readable direct_url.json (not shown)",
                    "use git+ssh://git@host/... with a deploy key, a token-free mirror, or a "
                    "local checkout (flower_app_source = 'path/to/app')",
                )
        return value

    return check


def setting(check: Check, doc: str = "") -> Any:
    return field(metadata={"check": check, "doc": doc})


# --- sections -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Egress:
    """How hosts reach package registries (the lab's hosts: only via an HTTP proxy)."""

    egress_proxy: str = setting(url(("http", "https")))
    egress_ca_certificates: tuple[str, ...] = setting(
        string_list(text(r".+\.(pem|crt)", "a .pem/.crt path"))
    )
    pip_index_url: str = setting(url(("http", "https")))

    prefix = "flower_"


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
    group: str = setting(account(group=True))
    socket_clients: tuple[str, ...] = setting(string_list(name()))
    service: str = setting(service_name())
    config_dir: str = setting(absolute_path())
    install_dir: str = setting(absolute_path())
    app: str = setting(text(r"([\w.]+(:[\w.]+)?)?", "a Celery app like 'proj.celery:app'"))
    app_source: str = setting(app_source())
    app_workdir: str = setting(absolute_path(optional=True))
    unauthenticated_api: bool = setting(boolean())
    restart_sec: int = setting(integer(minimum=1, maximum=3600))
    start_limit_burst: int = setting(integer(minimum=1, maximum=1000))
    start_limit_interval_sec: int = setting(integer(minimum=1, maximum=DAY))
    stop_timeout_sec: int = setting(integer(minimum=1, maximum=3600))
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
        return LOCKS_DIR / f"flower-{self.version}.txt"

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
    def venvs_dir(self) -> str:
        return f"{self.install_dir}/venvs"

    @property
    def venv(self) -> str:
        """A symlink to the venv Flower runs from; switched only once a new venv is complete."""
        return f"{self.install_dir}/venv"

    @property
    def workdir(self) -> str:
        return self.app_workdir or self.state_dir

    @property
    def app_is_local(self) -> bool:
        """A path (package specs and git/https URLs never hold a bare '/')."""
        return "/" in self.app_source and "://" not in self.app_source

    @property
    def app_is_git(self) -> bool:
        return self.app_source.startswith("git+")


SECTIONS = {"egress": Egress, "options": FlowerOptions, "flower": Flower}


@dataclass(frozen=True)
class Settings:
    egress: Egress
    options: FlowerOptions
    flower: Flower
    firewall: Firewall
    site: Site
    nginx: Nginx
    tls: Tls
    auth: Auth
    oauth_provider: OAuthProvider


# --- loading --------------------------------------------------------------------------------


def known_keys() -> dict[str, Check]:
    return {
        section.prefix + f.name: f.metadata["check"]
        for section in SECTIONS.values()
        for f in fields(section)
    }


def load_settings(data: Mapping[str, Any]) -> Settings:
    """Validate one host's data (host.data.dict()) over the defaults into Settings, or raise
    SettingsErrors (a SettingsError) listing every problem."""
    settings, problems = validate(data)
    problems.raise_any()
    return settings


def validate(
    data: Mapping[str, Any], explicit: Collection[str] | None = None
) -> tuple[Settings, Problems]:
    """Every key's check and every rule between keys, all run: the problems found, and the
    settings (where a key failed, its section lacks that attribute). `data` overrides DEFAULTS;
    `explicit`: the keys the operator set (see renamed_keys)."""
    problems = Problems()
    checks = known_keys()
    problems.errors.extend(unknown_keys(data, checks))
    problems.errors.extend(renamed_keys(data, explicit))
    data = {**DEFAULTS, **data}
    settings = Settings(
        **{attr: _section(section, data, checks, problems) for attr, section in SECTIONS.items()}
    )
    incomplete = bool(problems.errors)
    for rule in RULES:
        with problems.check(incomplete):
            for error in rule(settings):
                problems.errors.append(error)
    return settings, problems


def _section(section: type, data: Mapping[str, Any], checks: dict[str, Check], problems: Problems):
    values = {}
    for f in fields(section):
        with problems.check():
            values[f.name] = _checked(data, section.prefix + f.name, checks)
    if len(values) == len(fields(section)):
        return section(**values)
    partial = object.__new__(section)  # rules that need a failed key are skipped
    for attribute, value in values.items():
        object.__setattr__(partial, attribute, value)
    return partial


def _checked(data: Mapping[str, Any], key: str, checks: dict[str, Check]) -> Any:
    if key not in data:
        raise SettingsError(key, "missing", "define it with its default in group_data/all.py")
    reject_control_characters(key, data[key])
    return checks[key](key, data[key])


def renamed_keys(
    data: Mapping[str, Any], explicit: Collection[str] | None = None
) -> Iterator[SettingsError]:
    """An old name (`fqdn`) is an error naming its new one (`flower_fqdn`) unless the new name
    is set explicitly too: then the old one is the deploy's own key, never read by flowerbed.
    `explicit`: the keys the operator set; if unknown, those whose value is not the default."""
    if explicit is None:
        explicit = {key for key, value in data.items() if DEFAULTS.get(key, data) != value}
    for key in data:
        new = RENAMED.get(key)
        if new and new not in explicit:
            yield SettingsError(
                key,
                f"flowerbed's keys all start with flower_ now: this one is {new}",
                f"rename {key} to {new}; if {key} is your own deploy's key, not flowerbed's, "
                f"also set {new} (its default: {DEFAULTS[new]!r})",
            )


def unknown_keys(data: Mapping[str, Any], checks: Mapping[str, Check]) -> Iterator[SettingsError]:
    for key in data:
        if key in checks or key in RENAMED or key.startswith(VERIFY):  # VERIFY: operator_checks
            continue
        if key in MANAGED_KEYS:
            yield SettingsError(key, f"not a setting: {MANAGED_KEYS[key]}", f"remove {key}")
            continue
        close = difflib.get_close_matches(key, checks, n=1, cutoff=0.8)
        if key.startswith(OWNED_PREFIXES) or close:
            hint = f"did you mean {close[0]!r}?" if close else "see group_data/all.py for every key"
            yield SettingsError(key, "unknown key", hint)


def check_consistency(s: Settings) -> Iterator[SettingsError]:
    """Rules that span several keys."""
    f, o = s.flower, s.options
    for i, certificate in enumerate(s.egress.egress_ca_certificates):
        if not local_path(certificate).is_file():
            yield SettingsError(
                f"flower_egress_ca_certificates[{i}]",
                f"{certificate} is not a file",
                "give the path of a PEM file, absolute or relative to where pyinfra runs",
            )
    if not f.lock_file.is_file():
        have = sorted(p.stem.removeprefix("flower-") for p in LOCKS_DIR.glob("flower-*.txt"))
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
    if f.app_is_local and not _local_app_dir(f.app_source).is_dir():
        yield SettingsError(
            "flower_app_source", f"{f.app_source!r} is not a directory", "use an existing path"
        )
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
    if f.socket_clients and f.user in f.socket_clients:
        yield SettingsError(
            "flower_socket_clients", "lists Flower's own user", f"remove {f.user!r} from the list"
        )


def _local_app_dir(source: str) -> Path:
    return local_path(source)


def local_app_dir(flower: Flower) -> Path:
    return _local_app_dir(flower.app_source)


# --- firewall (flowerbed/firewall.py) ---------------------------------------------------------

EVERYWHERE = ("0.0.0.0/0", "::/0")
RESERVED_PORTS = {80: "HTTP (ACME challenge, redirect)", 443: "HTTPS (the dashboard)"}


def networks(empty: tuple[str, str] | None = None) -> Check:
    """A list of IPv4/IPv6 networks in CIDR form; `empty` = (problem, fix) if [] is an error."""
    hint = "a list of CIDRs like ['203.0.113.0/24', '2001:db8::/48']"

    def check(key: str, value: Any) -> tuple[str, ...]:
        _expect(key, value, (list, tuple), hint)
        if not value and empty:
            raise SettingsError(key, *empty)
        return tuple(_network(f"{key}[{i}]", item) for i, item in enumerate(value))

    return check


def _network(key: str, value: Any) -> str:
    _expect(key, value, str, "a CIDR like '203.0.113.0/24' or '2001:db8::/48'")
    try:
        return str(ipaddress.ip_network(value.strip()))
    except ValueError as error:
        if "has host bits set" not in str(error):
            raise SettingsError(
                key,
                f"{value!r} is not an IPv4/IPv6 address or network",
                "use CIDR notation, e.g. '203.0.113.0/24', '198.51.100.7/32' or '2001:db8::/48'",
            ) from error
        address, network = value.split("/")[0], ipaddress.ip_network(value, strict=False)
        single = f"{address}/{network.max_prefixlen}"
        raise SettingsError(
            key,
            f"{value!r} has host bits set, so it is ambiguous",
            f"use {str(network)!r} for the whole network or {single!r} for that one address",
        ) from error


def port() -> Check:
    def check(key: str, value: Any) -> int:
        _expect(key, value, int, "a TCP port (1-65535)")
        if not 1 <= value <= 65535:
            raise SettingsError(key, f"{value} is not a TCP port", "use a port from 1 to 65535")
        return value

    return check


@dataclass(frozen=True)
class Firewall:
    """flowerbed's nftables table: who may open which port; everything else new is dropped."""

    allowed_sources: tuple[str, ...] = setting(
        networks(
            empty=(
                "an empty list would let no one reach the dashboard (flowerbed never reads it "
                "as 'open to all')",
                "list your users' networks, e.g. flower_allowed_sources = ['203.0.113.0/24']; to "
                "really open HTTPS to everyone say so: ['0.0.0.0/0', '::/0']",
            )
        ),
        "networks that may reach HTTPS (443), the dashboard",
    )
    admin_sources: tuple[str, ...] = setting(
        networks(
            empty=(
                "an empty list would close SSH to everyone and lock the operator out",
                "list the networks you run pyinfra and ssh from, e.g. "
                "flower_admin_sources = ['198.51.100.7/32']",
            )
        ),
        "networks that may reach SSH (flower_firewall_ssh_port): the operator's",
    )
    acme_sources: tuple[str, ...] = setting(
        networks(),
        "networks that may reach HTTP (80): the ACME challenge and the HTTPS redirect",
    )
    monitoring_sources: tuple[str, ...] = setting(
        networks(),
        "networks that reach HTTPS and read /metrics (and /healthcheck) without a login",
    )
    firewall_ssh_port: int = setting(port(), "sshd's port, opened to flower_admin_sources")
    firewall_rollback_seconds: int = setting(
        integer(minimum=45, maximum=600),
        "a new ruleset not confirmed over a new SSH connection is undone",
    )
    firewall_allow_ssh_from_anywhere: bool = setting(
        boolean(), "the only way flower_admin_sources may hold 0.0.0.0/0 or ::/0"
    )
    firewall_allow_metrics_from_anywhere: bool = setting(
        boolean(), "the only way flower_monitoring_sources may hold 0.0.0.0/0 or ::/0"
    )

    prefix = "flower_"


SECTIONS["firewall"] = Firewall


def check_firewall(s: Settings) -> Iterator[SettingsError]:
    """Port 80 stays open to whoever must validate HTTP-01: restricting it never silently breaks
    issuance or renewal."""
    acme, tls = s.firewall.acme_sources, s.tls
    dns_01 = "use flower_tls_challenge = 'dns-01' to keep port 80 closed"
    if s.firewall.firewall_ssh_port in RESERVED_PORTS:
        yield SettingsError(
            "flower_firewall_ssh_port",
            f"{s.firewall.firewall_ssh_port} is flowerbed's "
            f"{RESERVED_PORTS[s.firewall.firewall_ssh_port]} port",
            "set it to the port sshd listens on (usually 22)",
        )
    yield from _opened_to_everyone(s.firewall)
    if tls.challenge == "http-01" and not acme:
        yield SettingsError(
            "flower_acme_sources",
            "an empty list closes port 80, so HTTP-01 can neither issue nor renew certificates",
            f"keep the default {list(EVERYWHERE)}, or {dns_01}",
        )
    lets_encrypt = tls.challenge == "http-01" and tls.acme_directory in LETS_ENCRYPT.values()
    restricted = not set(EVERYWHERE) <= set(acme)  # values are normalised by networks()
    if lets_encrypt and acme and restricted:
        yield SettingsError(
            "flower_acme_sources",
            "Let's Encrypt validates HTTP-01 from addresses it does not publish: a restricted "
            "port 80 would make issuance and renewal fail",
            f"keep {list(EVERYWHERE)}, or {dns_01}",
        )


def _opened_to_everyone(firewall: Firewall) -> Iterator[SettingsError]:
    """SSH or /metrics for the whole internet only when a setting that says so is True."""
    for key, opt_in, what in (
        ("flower_admin_sources", "flower_firewall_allow_ssh_from_anywhere", "SSH"),
        (
            "flower_monitoring_sources",
            "flower_firewall_allow_metrics_from_anywhere",
            "/metrics without a login",
        ),
    ):
        everywhere = [n for n in getattr(firewall, key.removeprefix("flower_")) if n.endswith("/0")]
        if everywhere and not getattr(firewall, opt_in.removeprefix("flower_")):
            yield SettingsError(
                key,
                f"{everywhere[0]} opens {what} to the whole internet",
                f"list your own networks, e.g. {key} = ['198.51.100.7/32']; if you really mean "
                f"everyone, also set {opt_in} = True",
            )


# --- the edge: nginx, TLS (certbot), dashboard logins (flowerbed/edge.py) ---------------------

LETS_ENCRYPT = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
AUTH_MODES = ("basic", "oauth")
CHALLENGES = ("http-01", "dns-01")
DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


def dns_name(optional: bool = False) -> Check:
    hint = "a DNS name like 'flower.example.com' (or '*.example.com' with DNS-01)"
    pattern = rf"(\*\.)?({DNS_LABEL}\.)+{DNS_LABEL}"

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, hint)
        if optional and not value:
            return ""
        name = value.lower().rstrip(".")
        if not re.fullmatch(pattern, name) or len(name) > 253:
            raise SettingsError(key, f"{value!r} is not {hint}", f"set {key} to {hint}")
        return name

    return check


def local_file(optional: bool = True) -> Check:
    """A file on the operator's machine (absolute, or relative to where pyinfra runs)."""

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, "a path on this machine")
        if optional and not value:
            return ""
        if not local_path(value).is_file():
            raise SettingsError(
                key,
                f"{value} is not a file here",
                "point it at an existing file, absolute or relative to where pyinfra runs",
            )
        return str(local_path(value))

    return check


def nginx_directive() -> Check:
    def check(key: str, value: Any) -> str:
        _expect(key, value, str, "one nginx directive ending in ';'")
        if problem := nginx_snippet_problem(value):
            raise SettingsError(
                key,
                f"{shown(value)} {problem}",
                "give single directives like 'access_log off;' or 'client_max_body_size 1m;'",
            )
        return value

    return check


def acme_directory() -> Check:
    hint = f"{' or '.join(LETS_ENCRYPT)}, or an ACME directory URL (https://...)"

    def check(key: str, value: Any) -> str:
        _expect(key, value, str, hint)
        if value in LETS_ENCRYPT:
            return LETS_ENCRYPT[value]
        return url(("https",), optional=False)(key, value)

    return check


@dataclass(frozen=True)
class Site:
    """The dashboard's names."""

    fqdn: str = setting(dns_name(optional=True), "the name browsers use ('' = the host's name)")
    server_aliases: tuple[str, ...] = setting(string_list(dns_name()), "more names, same site")

    prefix = "flower_"


@dataclass(frozen=True)
class Nginx:
    """The reverse proxy's site: headers, HSTS, timeouts, and extra directives."""

    hsts_max_age: int = setting(
        integer(maximum=2 * 365 * DAY), "Strict-Transport-Security max-age (0 = no header)"
    )
    hsts_include_subdomains: bool = setting(boolean(), "HSTS for every subdomain too")
    proxy_read_timeout: int = setting(
        integer(minimum=1, maximum=3600), "seconds nginx waits for Flower"
    )
    server_snippets: tuple[str, ...] = setting(
        string_list(nginx_directive()),
        "extra directives for the HTTPS server block",
    )
    login_failures_per_minute: int = setting(
        integer(minimum=1, maximum=6000), "failed logins per minute a source may make (then 429)"
    )
    login_failures_burst: int = setting(
        integer(maximum=10000), "failed logins a source may make at once"
    )
    requests_per_second: int = setting(
        integer(minimum=1, maximum=10000), "requests a source may make per second (caps bcrypt)"
    )
    requests_burst: int = setting(integer(maximum=100000), "requests a source may make at once")

    prefix = "flower_nginx_"


@dataclass(frozen=True)
class Tls:
    """The certificate: which ACME directory issues it and how names are proven."""

    acme_directory: str = setting(acme_directory(), "who issues the certificate")
    acme_ca_bundle: str = setting(local_file(), "CA bundle for a private ACME directory's HTTPS")
    email: str = setting(text(r"([^@\s]+@[^@\s]+)?", "an e-mail address ('' = none)"))
    challenge: str = setting(one_of(CHALLENGES, optional=False), "http-01 or dns-01")
    dns_plugin: str = setting(text(r"([a-z0-9]+)?", "a certbot DNS plugin like 'cloudflare'"))
    dns_credentials_env: str = setting(env_name(optional=True), "holds the plugin's .ini path")
    dns_hook: str = setting(local_file(), "a manual DNS-01 hook script (args: auth|cleanup)")

    prefix = "flower_tls_"

    @property
    def authenticator(self) -> str:
        """certbot's name for how names are proven (as its renewal configuration records it)."""
        if self.challenge == "http-01":
            return "webroot"
        return f"dns-{self.dns_plugin}" if self.dns_plugin else "manual"


@dataclass(frozen=True)
class Auth:
    """Who may use the dashboard: nginx basic auth, or Flower's OAuth."""

    mode: str = setting(one_of(AUTH_MODES, optional=False), "basic (at nginx) or oauth (Flower)")
    users_env: str = setting(env_name(optional=True), "holds user:password[,user:password]")

    prefix = "flower_auth_"


SECTIONS.update(site=Site, nginx=Nginx, tls=Tls, auth=Auth)


# --- OAuth providers: what Flower's login handlers read from the environment -----------------

OKTA, GITHUB, GITLAB = (f"flower.views.auth.{h}LoginHandler" for h in ("Okta", "Github", "GitLab"))
GITLAB_ACCESS_LEVELS = (5, 10, 15, 20, 30, 40, 50)  # minimal, guest, planner, reporter, ...


def gitlab_access_level() -> Check:
    def check(key: str, value: Any) -> int:
        _expect(key, value, int, f"a GitLab access level {GITLAB_ACCESS_LEVELS}")
        if value not in GITLAB_ACCESS_LEVELS:
            raise SettingsError(
                key, f"{value} is not a GitLab access level", f"use one of {GITLAB_ACCESS_LEVELS}"
            )
        return value

    return check


def oauth_domain() -> Check:
    def check(key: str, value: Any) -> str:
        value = dns_name(optional=True)(key, value)
        if value.startswith("*."):
            raise SettingsError(key, "a wildcard is not a domain", "name the provider's host")
        return value

    return check


def okta_base_url() -> Check:
    def check(key: str, value: Any) -> str:
        value = url(("https",))(key, value).rstrip("/")
        parts = urlsplit(value)
        if parts.query or parts.fragment or value.endswith("/v1"):
            raise SettingsError(
                key,
                f"{value!r} is not a base URL: Flower appends /v1/authorize, /v1/token and "
                "/v1/userinfo to it",
                "use e.g. https://example.okta.com/oauth2/default (no /v1, query or fragment)",
            )
        return value

    return check


@dataclass(frozen=True)
class OAuthProvider:
    """Settings Flower's login handlers read from the environment (the unit's Environment=)."""

    flower_oauth2_okta_base_url: str = setting(
        okta_base_url(), "Okta: the authorization server, e.g. https://x.okta.com/oauth2/default"
    )
    flower_github_oauth_domain: str = setting(
        oauth_domain(), "GitHub Enterprise's domain ('' = github.com)"
    )
    flower_gitlab_oauth_domain: str = setting(
        oauth_domain(), "a self-hosted GitLab's domain ('' = gitlab.com)"
    )
    flower_gitlab_auth_allowed_groups: tuple[str, ...] = setting(
        string_list(text(r"[\w.-]+(/[\w.-]+)*", "a GitLab group's full path like 'acme/ops'")),
        "GitLab groups (full paths) a user must belong to ([] = any)",
    )
    flower_gitlab_min_access_level: int = setting(
        gitlab_access_level(), "the access level a user needs in one of those groups"
    )

    prefix = ""

    def environment(self, provider: str) -> list[tuple[str, str]]:
        """The variables `provider`'s handler reads, as Flower names them."""
        if provider == OKTA:
            return [("FLOWER_OAUTH2_OKTA_BASE_URL", self.flower_oauth2_okta_base_url)]
        if provider == GITHUB and self.flower_github_oauth_domain:
            return [("FLOWER_GITHUB_OAUTH_DOMAIN", self.flower_github_oauth_domain)]
        if provider == GITLAB:
            groups = ",".join(self.flower_gitlab_auth_allowed_groups)
            domain = self.flower_gitlab_oauth_domain
            return [
                *([("FLOWER_GITLAB_OAUTH_DOMAIN", domain)] if domain else []),
                *([("FLOWER_GITLAB_AUTH_ALLOWED_GROUPS", groups)] if groups else []),
                ("FLOWER_GITLAB_MIN_ACCESS_LEVEL", str(self.flower_gitlab_min_access_level)),
            ]
        return []


SECTIONS["oauth_provider"] = OAuthProvider


def check_oauth_provider(s: Settings) -> Iterator[SettingsError]:
    """Each provider setting only with its provider; Okta cannot work without its base URL."""
    provider, p = s.options.auth_provider, s.oauth_provider
    if provider == OKTA and not p.flower_oauth2_okta_base_url:
        yield SettingsError(
            "flower_oauth2_okta_base_url",
            "Okta's login handler builds every URL from it (without it users go to None/v1/...)",
            "set it to your Okta authorization server, e.g. https://x.okta.com/oauth2/default",
        )
    owners = {
        "flower_oauth2_okta_base_url": OKTA,
        "flower_github_oauth_domain": GITHUB,
        "flower_gitlab_oauth_domain": GITLAB,
        "flower_gitlab_auth_allowed_groups": GITLAB,
    }
    for key, owner in owners.items():
        if getattr(p, key) and provider != owner:
            yield SettingsError(
                key,
                f"only {owner.rsplit('.', 1)[1]} reads it (flower_auth_provider is "
                f"{provider or 'unset'!r})",
                f"remove {key}, or set flower_auth_provider = {owner!r}",
            )


def check_edge(s: Settings) -> Iterator[SettingsError]:
    """Rules between the edge's settings and Flower's."""
    tls, auth, flower, options = s.tls, s.auth, s.flower, s.options
    yield from duplicate_names(s.site.fqdn, s.site.server_aliases)
    wildcards = [n for n in (s.site.fqdn, *s.site.server_aliases) if n.startswith("*.")]
    if tls.challenge == "http-01" and (wildcards or tls.dns_plugin or tls.dns_hook):
        yield SettingsError(
            "flower_tls_challenge",
            "wildcard names, flower_tls_dns_plugin and flower_tls_dns_hook need DNS-01",
            "set flower_tls_challenge = 'dns-01'",
        )
    if tls.challenge == "dns-01" and bool(tls.dns_plugin) == bool(tls.dns_hook):
        yield SettingsError(
            "flower_tls_challenge",
            "DNS-01 needs exactly one of flower_tls_dns_plugin and flower_tls_dns_hook",
            "name a certbot DNS plugin (e.g. 'cloudflare') or a hook script",
        )
    if tls.dns_credentials_env and not tls.dns_plugin:
        yield SettingsError(
            "flower_tls_dns_credentials_env",
            "is only for a DNS plugin",
            "set flower_tls_dns_plugin",
        )
    if s.nginx.proxy_read_timeout * 1000 <= options.inspect_timeout:
        yield SettingsError(
            "flower_nginx_proxy_read_timeout",
            "nginx would give up before Flower's inspect_timeout",
            "make it longer than flower_inspect_timeout (ms)",
        )
    if auth.mode == "basic":
        if not auth.users_env:
            yield SettingsError(
                "flower_auth_users_env",
                "basic auth needs its logins",
                "name the variable that holds them",
            )
        if options.auth or flower.basic_auth or not flower.unauthenticated_api:
            yield SettingsError(
                "flower_auth_mode",
                "with logins at nginx, Flower must not authenticate (nginx strips the login "
                "before Flower sees it) and its API must be open to the proxy",
                "set flower_auth = '', flower_basic_auth = {}, flower_unauthenticated_api = True"
                ", or flower_auth_mode = 'oauth'",
            )
    if auth.mode == "oauth" and (not options.auth or flower.unauthenticated_api):
        yield SettingsError(
            "flower_auth_mode",
            "with OAuth, Flower does the login: it needs flower_auth, and its API must require it",
            "set flower_auth (and its provider settings) and flower_unauthenticated_api = False",
        )


def duplicate_names(fqdn: str, aliases: tuple[str, ...]) -> Iterator[SettingsError]:
    """certbot drops a repeated name, so the lineage never matches the request and every run
    would renew (into Let's Encrypt's duplicate-certificate limit). Names are normalised."""
    seen = {fqdn} if fqdn else set()
    for i, alias in enumerate(aliases):
        if alias in seen:
            what = "the fqdn" if alias == fqdn else "another alias"
            yield SettingsError(
                f"flower_server_aliases[{i}]",
                f"{alias!r} repeats {what} (names compare without case and trailing dot)",
                "list each name once; the fqdn is on the certificate already",
            )
        seen.add(alias)


RULES = (check_consistency, check_firewall, check_edge, check_oauth_provider)
