"""The rules bad input is checked against, and how problems are reported: all at once, each
naming the key, what is wrong and the fix, and never showing a secret.

flowerbed/settings/ applies these rules to host data, flowerbed/inputs/ to the secrets from
the operator's environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, urlsplit


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


class SettingsError(ValueError):
    """Bad deploy data: the message names the key, the problem and the fix."""

    def __init__(self, key: str, problem: str, fix: str):
        self.key = key
        super().__init__(f"{key}: {problem}. Fix: {fix}")


class SettingsErrors(SettingsError):
    """Every problem found in one pass, one line each."""

    def __init__(self, errors: list[SettingsError]):
        self.errors = [e for error in errors for e in getattr(error, "errors", [error])]
        self.key = self.errors[0].key
        ValueError.__init__(self, "\n".join(str(error) for error in self.errors))


class Problems:
    """Collects SettingsErrors so that one run reports every problem, not just the first."""

    def __init__(self) -> None:
        self.errors: list[SettingsError] = []
        self.skipped = False

    @contextmanager
    def check(self, incomplete: bool = False) -> Iterator[None]:
        """Collect what the block raises. `incomplete`: some inputs already failed their own
        check (and were reported); a rule that needs one of them is skipped (AttributeError)."""
        try:
            yield
        except SettingsError as error:
            self.errors.extend(getattr(error, "errors", [error]))  # SettingsErrors: each one
        except AttributeError:
            if not incomplete:
                raise
            self.skipped = True

    def raise_any(self) -> None:
        """Raise what was found; if nothing was but a check was skipped, say so to the caller
        (Incomplete: its own caller skips what needed this result)."""
        if self.errors:
            raise SettingsErrors(self.errors)
        if self.skipped:
            raise Incomplete("a check was skipped: an input it needs failed its own check")


class Incomplete(AttributeError):
    """Nothing wrong here, but an input this needed already failed (and was reported)."""


# --- values that reach hosts' files ----------------------------------------------------------

CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def reject_control_characters(key: str, value: Any) -> None:
    """A newline in a value that a template writes adds a line of the attacker's choice (an apt
    `Pre-Invoke`, an nginx directive). Checked on the raw value: urlsplit drops newlines."""
    if isinstance(value, str):
        if CONTROL_CHARACTER.search(value):
            raise SettingsError(
                key,
                "contains a newline, tab or other control character, which would add lines to "
                "the files written on the hosts",
                f"make {key} one line of plain text",
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            reject_control_characters(key, k)
            reject_control_characters(key, v)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            reject_control_characters(f"{key}[{i}]", item)


URL_USERINFO = re.compile(r"(?<=://)[^/?#@\s]*@")


def shown(value: Any, limit: int = 80) -> str:
    """A value as an error message may quote it: credentials in URLs blanked, long ones cut."""
    if not isinstance(value, str):
        return repr(value) if len(repr(value)) <= limit else f"a {type(value).__name__}"
    text = URL_USERINFO.sub("<credentials>@", value)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def looks_like_a_secret(value: str) -> bool:
    """A value pasted where a variable NAME belongs: a URL, a login, a password."""
    return bool(re.search(r"[:@/=\s]", value)) or not value.isupper()


# --- URLs ------------------------------------------------------------------------------------


def split_url(key: str, value: str, example: str) -> SplitResult:
    """urlsplit, with a port that is an integer 1-65535 and never an echo of the value."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise SettingsError(
            key, "is not a URL (a bad port or IPv6 address)", f"use e.g. {example}"
        ) from None
    return parts


def has_credentials(parts: SplitResult) -> bool:
    """`http://user:pw@h`, `http://:pw@h` and `http://token@h` all carry credentials."""
    return "@" in parts.netloc


# --- system names and directories -----------------------------------------------------------

# Grammar only: whether a user, group, unit or directory may be Flower's is decided from the host
# itself (flowerbed/ownership.py), never from a list of names.
FLOWER_DIR_ROOTS = ("/etc", "/opt", "/srv", "/usr/local", "/var/lib", "/var/opt")


def directory_root_problem(path: str) -> str | None:
    """Flower's config and venv directories sit inside one of FLOWER_DIR_ROOTS (never one)."""
    if not any(path.startswith(root + "/") for root in FLOWER_DIR_ROOTS):
        return f"{path} is not inside {', '.join(FLOWER_DIR_ROOTS)}"
    return None


def unit_name_problem(name: str) -> str | None:
    """flowerbed's own units (flowerbed-firewall...) are never Flower's."""
    if name.startswith("flowerbed"):
        return f"{name!r} starts with 'flowerbed', which names flowerbed's own units"
    return None


# --- nginx ------------------------------------------------------------------------------------

# One directive: a name, then arguments that are bare words or quoted strings, then ';'. No
# blocks, comments, escapes or second directive; a quoted string holds no quote or backslash.
NGINX_WORD = r"""[^\s"'{};#\\]+|"[^"\\]*"|'[^'\\]*'"""
NGINX_DIRECTIVE = re.compile(
    rf"\s*([a-z_][a-z0-9_]*)((?:\s+(?:{NGINX_WORD}))*)\s*;\s*",
    re.ASCII,  # nginx's spaces only
)

# The arguments' grammars: sizes and times bounded, switches on/off; no '$' (variables), no path.
_ON_OFF = r"on|off"
_SIZE = r"[1-9][0-9]{0,5}[kKmM]?"  # 1 to 999999 bytes, or k/m of them
_TIME = r"[1-9][0-9]{0,3}(ms|s|m)?"  # at most 9999 minutes; never 0 (no limit) or a bare path
_MIME = r"[a-z]+/[a-z0-9.+-]+"
_GZIP_PROXIED = r"off|expired|no-cache|no-store|private|no_last_modified|no_etag|auth|any"
# add_header for headers nginx and flowerbed do not set already (a second X-Frame-Options or
# Strict-Transport-Security would contradict flowerbed's), none that relaxes who may read
# (Access-Control-*) or sets state (Set-Cookie): a value without variables, then `always`.
NGINX_HEADERS = (
    "X-Robots-Tag", "Permissions-Policy", "Content-Security-Policy",
    "Content-Security-Policy-Report-Only", "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy", "Cross-Origin-Embedder-Policy", "Cache-Control",
)  # fmt: skip
_HEADER_VALUE = r"""[A-Za-z0-9._:/=,+*()-]+|"[^"\\$]*"|'[^'\\$]*'"""

# Directives a snippet may hold without flower_nginx_server_snippets_unchecked: each can neither
# name a file (temp paths, logs, includes are written or read as root) nor turn a limit, a
# throttle or a login off. Directive -> the grammar of its arguments (single-spaced).
NGINX_ALLOWED: dict[str, str] = {
    "access_log": r"off",  # a path creates or truncates that file as root
    "log_not_found": _ON_OFF,
    "log_subrequest": _ON_OFF,
    "client_body_timeout": _TIME,
    "client_header_timeout": _TIME,
    "send_timeout": _TIME,
    "keepalive_timeout": rf"({_TIME})( {_TIME})?|0",  # 0: no keep-alive (stricter)
    "keepalive_requests": r"[1-9][0-9]{0,4}",
    "client_body_buffer_size": _SIZE,
    "client_header_buffer_size": _SIZE,
    "large_client_header_buffers": rf"[1-9][0-9]? {_SIZE}",
    "reset_timedout_connection": _ON_OFF,
    "gzip": _ON_OFF,
    "gzip_comp_level": r"[1-9]",
    "gzip_min_length": r"[0-9]{1,7}[kKmM]?",
    "gzip_types": rf"({_MIME})( {_MIME})*",
    "gzip_vary": _ON_OFF,
    "gzip_proxied": rf"({_GZIP_PROXIED})( ({_GZIP_PROXIED}))*",
    "charset": r"off|[A-Za-z0-9][A-Za-z0-9_-]{0,31}",
    "etag": _ON_OFF,
    "if_modified_since": r"off|exact|before",
    "sendfile": _ON_OFF,
    "tcp_nodelay": _ON_OFF,
    "tcp_nopush": _ON_OFF,
    "add_header": rf"({'|'.join(NGINX_HEADERS)}) ({_HEADER_VALUE})( always)?",
}
NGINX_ALLOWED_GRAMMAR = {name: re.compile(rule) for name, rule in NGINX_ALLOWED.items()}
# What flowerbed's site sets itself, and the key that sets it instead (nginx refuses a duplicate).
NGINX_SET_ALREADY = {
    "proxy_read_timeout": "set flower_nginx_proxy_read_timeout instead",
    "proxy_send_timeout": "set flower_nginx_proxy_read_timeout instead",
    "client_max_body_size": "its 1m is more than Flower's API takes",
    "server_tokens": "it is off",
}
NGINX_UNCHECKED_KEY = "flower_nginx_server_snippets_unchecked"


def nginx_directive_words(snippet: str) -> tuple[str, list[str]] | None:
    """(directive, arguments) of one simple nginx directive, or None if it is not one."""
    match = NGINX_DIRECTIVE.fullmatch(snippet)
    if not match:
        return None
    return match.group(1), re.findall(NGINX_WORD, match.group(2), re.ASCII)


def nginx_snippet_syntax_problem(snippet: str) -> str | None:
    """Whatever the directive: one of them, which cannot add a block or a second directive."""
    if nginx_directive_words(snippet) is None:
        return (
            "is not one simple nginx directive ending in ';' (no blocks, comments, escapes or "
            "';' outside quotes)"
        )
    return None


def nginx_snippet_problem(snippet: str) -> str | None:
    """The allow-list: None if the snippet is one directive of NGINX_ALLOWED whose arguments
    match its grammar; else the problem (without flower_nginx_server_snippets_unchecked)."""
    words = nginx_directive_words(snippet)
    if words is None:
        return nginx_snippet_syntax_problem(snippet)
    directive, arguments = words
    if directive not in NGINX_ALLOWED_GRAMMAR:
        if directive in NGINX_SET_ALREADY:
            why = NGINX_SET_ALREADY[directive]
            return f"uses {directive!r}, which flowerbed's site sets already: {why}"
        return (
            f"uses {directive!r}, which is not one of the directives flowerbed knows cannot reach "
            "the file system or turn a limit, throttle or login off"
        )
    if not NGINX_ALLOWED_GRAMMAR[directive].fullmatch(" ".join(arguments)):
        return (
            f"gives {directive!r} arguments flowerbed does not allow for it (no file paths, "
            "variables, headers of flowerbed's, 0 or unbounded values)"
        )
    return None


# --- Flower's --auth (flower/utils/authentication.py in 2.2; views/auth.py in 2.1) -----------

EMAIL = re.compile(r"[A-Za-z0-9!#$%&'+/=?^_`{}~.-]+@(?!-)[a-z0-9-]+(\.[a-z0-9-]+)+")


def flower_auth_problem(pattern: str) -> str | None:
    """Flower does not read a regexp: `a@x|b@y` is a list of exact addresses; otherwise `.*`
    (once, before the '@') matches any local part and everything else is literal. `*` without
    the dot matches only a literal '*'; a '*' after the '@' or beside a '|' makes Flower exit."""
    if "|" in pattern:
        if "*" in pattern:
            return "mixes a list ('|') with a wildcard, which Flower refuses at start"
        bad = [a for a in pattern.split("|") if not EMAIL.fullmatch(a)]
        return f"{bad[0]!r} in the list is not an e-mail address" if bad else None
    local, at, domain = pattern.rpartition("@")
    if not at or not EMAIL.fullmatch(f"x@{domain}"):
        return "does not end in '@' and a lower-case domain like 'example.com'"
    if pattern.count("*") > 1 or (pattern.count("*") and ".*" not in local):
        return "has a '*' that Flower matches literally: its one wildcard is '.*' before the '@'"
    if not EMAIL.fullmatch(local.replace(".*", "x", 1) + "@" + domain):
        return "has characters that are neither part of an e-mail address nor Flower's '.*'"
    return None


# --- secrets ----------------------------------------------------------------------------------

# The sample values of .env.example and other classics: a copied example is not a secret.
SAMPLE_SECRETS = words(
    """change-me change-me-too changeme a-long-random-string password passw0rd secret admin
    flower letmein 123456 12345678 123456789 1234567890 qwerty test example"""
)
MIN_PASSWORD_LENGTH = 12
MIN_COOKIE_SECRET_LENGTH = 32


def sample_secret(value: str) -> bool:
    return value.lower() in SAMPLE_SECRETS or "change-me" in value.lower()


def weak_password_problem(password: str, user: str = "") -> str | None:
    if sample_secret(password) or (user and password.lower() == user.lower()):
        return "is a sample or guessable value"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"is shorter than {MIN_PASSWORD_LENGTH} characters"
    if password != password.strip():
        return "starts or ends with whitespace (a copy-paste slip?)"
    return None


def weak_cookie_secret_problem(secret: str) -> str | None:
    if sample_secret(secret):
        return "is the sample value from .env.example"
    if len(secret) < MIN_COOKIE_SECRET_LENGTH or len(set(secret)) < 10:
        return (
            f"is shorter than {MIN_COOKIE_SECRET_LENGTH} characters or too repetitive: whoever "
            "guesses it can forge a login"
        )
    return None


def broker_url_problem(url: str, schemes: tuple[str, ...]) -> tuple[str, str] | None:
    """(problem, fix) for a broker URL, parsed the way kombu parses it; never quotes it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in schemes:
        named = (
            f" (scheme {scheme!r})" if sep and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else ""
        )
        return (
            f"is not a broker URL the lock supports{named}",
            f"use one of {schemes}, e.g. redis://:PASSWORD@host:6379/0",
        )
    if scheme == "redis+socket":
        return redis_socket_url_problem(rest)
    urls = url.split(";") if scheme == "sentinel" else [url]  # kombu: sentinels joined by ';'
    for one in urls:
        userinfo = one.partition("://")[2].rpartition("@")[0]
        if re.search(r"[/#?]", userinfo):
            return (
                "has an unencoded '/', '#' or '?' in its user name or password, so the host and "
                "password cannot be told apart",
                "percent-encode them in the password: '/' -> %2F, '#' -> %23, '?' -> %3F",
            )
        try:
            parts = urlsplit(one)
            port = parts.port
        except ValueError:
            port, parts = -1, None
        if parts is None or port == -1:
            return "has a port that is not a number from 1 to 65535", "e.g. redis://host:6379/0"
        if not parts.hostname:
            return "names no host", "e.g. redis://:PASSWORD@broker.example.com:6379/0"
        if scheme in ("redis", "rediss") and not re.fullmatch(r"/?\d*", parts.path):
            return "has a path that is not a Redis database number", "end it in /0 (or /1 ...)"
    return None


# kombu (transport/redis.py): `redis+socket://[:PASSWORD@]/PATH[?virtual_host=N]`; the query's
# keys become the Redis connection's arguments, so only the database number is allowed there.
REDIS_SOCKET = re.compile(
    r"(?:(?P<userinfo>[^@/?#]*)@)?(?P<path>/[A-Za-z0-9._/-]+)(?:\?(?P<query>[^#]*))?"
)


def redis_socket_url_problem(rest: str) -> tuple[str, str] | None:
    """(problem, fix) for what follows `redis+socket://`; never quotes it."""
    example = "redis+socket://:PASSWORD@/run/redis/redis-server.sock?virtual_host=0"
    match = REDIS_SOCKET.fullmatch(rest)
    if not match or {".", ".."} & set(match["path"].split("/")):
        return (
            "is not a Redis socket URL: after redis+socket:// come an optional ':PASSWORD@' "
            "(no '/', '#' or '?' in it: percent-encode them) and the socket's absolute path",
            f"e.g. {example}",
        )
    if match["query"] is not None and not re.fullmatch(
        r"(virtual_host|db)=\d{1,2}", match["query"]
    ):
        return "has a query other than the database number", f"e.g. {example}"
    return None
