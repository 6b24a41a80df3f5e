"""The edge (flowerbed/edge.py): the dashboard's names, nginx, TLS from ACME, and who logs in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..resources import is_local_file, local_path
from ..validation import (
    NGINX_UNCHECKED_KEY,
    SettingsError,
    nginx_snippet_problem,
    nginx_snippet_syntax_problem,
    shown,
)
from .checks import (
    DAY,
    Check,
    boolean,
    env_name,
    expect,
    integer,
    one_of,
    setting,
    string_list,
    text,
    url,
)

if TYPE_CHECKING:
    from . import Settings


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
        expect(key, value, str, hint)
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
        expect(key, value, str, "a path on this machine")
        if optional and not value:
            return ""
        if not is_local_file(value):
            raise SettingsError(
                key,
                f"{value} is not a file here",
                "point it at an existing file, absolute or relative to where pyinfra runs",
            )
        return str(local_path(value))

    return check


SNIPPET_FIX = "give single directives like 'access_log off;' or 'gzip on;'"


def nginx_directive() -> Check:
    """One directive, whatever it is (the allow-list is check_nginx_snippets: it needs the
    opt-in flower_nginx_server_snippets_unchecked)."""

    def check(key: str, value: Any) -> str:
        expect(key, value, str, "one nginx directive ending in ';'")
        if problem := nginx_snippet_syntax_problem(value):
            raise SettingsError(key, f"{shown(value)} {problem}", SNIPPET_FIX)
        return value

    return check


def acme_directory() -> Check:
    hint = f"{' or '.join(LETS_ENCRYPT)}, or an ACME directory URL (https://...)"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if value in LETS_ENCRYPT:
            return LETS_ENCRYPT[value]
        return url(("https",), optional=False)(key, value)

    return check


# An nginx file of the operator's: plain path segments under /etc/nginx, none of flowerbed's own.
NGINX_FILE = r"/etc/nginx(/[A-Za-z0-9_][A-Za-z0-9._-]*)+"
FLOWERBEDS_OWN = re.compile(r"/etc/nginx/(conf\.d|snippets)/flowerbed[^/]*")


def existing_site_file() -> Check:
    hint = "the nginx file holding your site's HTTPS server, like '/etc/nginx/sites-available/app'"

    def check(key: str, value: Any) -> str:
        expect(key, value, str, hint)
        if value and (not re.fullmatch(NGINX_FILE, value) or FLOWERBEDS_OWN.fullmatch(value)):
            raise SettingsError(
                key,
                f"{shown(value)} is not an nginx file of yours under /etc/nginx",
                f"set {key} to {hint}, or '' for a site of flowerbed's own",
            )
        return value

    return check


@dataclass(frozen=True)
class Site:
    """The dashboard's names, and whose nginx server serves it."""

    fqdn: str = setting(dns_name(optional=True), "the name browsers use ('' = the host's name)")
    server_aliases: tuple[str, ...] = setting(string_list(dns_name()), "more names, same site")
    existing_site: str = setting(
        existing_site_file(),
        "your nginx file whose HTTPS server for flower_fqdn serves Flower under "
        "/<flower_url_prefix>/, with its own certificate ('' = a site of flowerbed's own)",
    )
    existing_site_include: bool = setting(
        boolean(), "flowerbed adds the include line to that server, marked (False: it prints it)"
    )

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
        "extra directives for the HTTPS server block, from an allow-list (see "
        "flower_nginx_server_snippets_unchecked)",
    )
    server_snippets_unchecked: bool = setting(
        boolean(),
        "True: flower_nginx_server_snippets may hold ANY single directive, unchecked (one that "
        "writes files as root, or turns throttles or logins off, included); you vouch for each",
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
    expensive_per_minute: int = setting(
        integer(minimum=1, maximum=6000),
        "requests per minute a source may make that have Flower ask every worker or wait for a "
        "task (refresh=, timeout=, a worker's page or control, a task's apply)",
    )
    expensive_burst: int = setting(
        integer(maximum=10000), "such requests a source may make at once"
    )
    connections_per_source: int = setting(
        integer(minimum=1, maximum=10000), "connections one source may hold open to the dashboard"
    )
    ban_failures: int = setting(
        integer(maximum=1000),
        "failed logins in flower_nginx_ban_window_seconds that get a source banned by fail2ban "
        "(ports 80 and 443; 0 = no ban)",
    )
    ban_window_seconds: int = setting(
        integer(minimum=10, maximum=DAY), "seconds in which those failed logins count (findtime)"
    )
    ban_seconds: int = setting(
        integer(minimum=10, maximum=30 * DAY), "seconds a banned source stays banned (bantime)"
    )

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


def check_edge(s: Settings) -> Iterator[SettingsError]:
    """Rules between the edge's settings and Flower's."""
    tls, auth, flower, options = s.tls, s.auth, s.flower, s.options
    yield from duplicate_names(s.site.fqdn, s.site.server_aliases)
    yield from inside_existing_site(s)
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
        if options.auth or flower.basic_auth or flower.unauthenticated_api:
            yield SettingsError(
                "flower_auth_mode",
                "with logins at nginx, Flower's only login is the one flowerbed makes for nginx "
                "(an open API would trust every process of nginx's user)",
                "set flower_auth = '', flower_basic_auth = {}, flower_unauthenticated_api = False"
                ", or flower_auth_mode = 'oauth'",
            )
    if auth.mode == "oauth" and (not options.auth or flower.unauthenticated_api):
        yield SettingsError(
            "flower_auth_mode",
            "with OAuth, Flower does the login: it needs flower_auth, and its API must require it",
            "set flower_auth (and its provider settings) and flower_unauthenticated_api = False",
        )


def check_nginx_snippets(s: Settings) -> Iterator[SettingsError]:
    """Each snippet is on the allow-list (flowerbed/validation.py NGINX_ALLOWED), unless the
    operator opted out of the check by its loud name."""
    if s.nginx.server_snippets_unchecked:
        return
    for i, snippet in enumerate(s.nginx.server_snippets):
        if problem := nginx_snippet_problem(snippet):
            yield SettingsError(
                f"flower_nginx_server_snippets[{i}]",
                f"{shown(snippet)} {problem}",
                f"{SNIPPET_FIX} (the allow-list: flowerbed/validation.py NGINX_ALLOWED); if you "
                f"vouch for this one, set {NGINX_UNCHECKED_KEY} = True",
            )


def inside_existing_site(s: Settings) -> Iterator[SettingsError]:
    """Inside the operator's server Flower needs a path of its own, and the server's own
    directives stay the operator's."""
    if not s.site.existing_site:
        return
    if not s.options.url_prefix:
        yield SettingsError(
            "flower_url_prefix",
            "inside your own site (flower_existing_site) Flower needs a path of its own",
            "set flower_url_prefix, e.g. 'flower' for https://<your site>/flower/",
        )
    if s.nginx.server_snippets:
        yield SettingsError(
            "flower_nginx_server_snippets",
            "the server block is yours inside your own site (flower_existing_site)",
            "put these directives in your site's server block and set this to []",
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
