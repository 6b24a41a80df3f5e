"""Flower inside the operator's own nginx site: https://<their site>/<prefix>/ (the setup guide's
`location /flower` in the app's server block, with the app's certificate).

flowerbed writes two files and, if asked, one line:
- conf.d/flowerbed.conf: the http-level parts (Flower's upstream, the CSRF guard's maps, the
  throttles' zones, who reads /metrics, who reaches the dashboard, the failed-login counter);
- snippets/flowerbed-flower.conf: the dashboard's locations, each carrying the guard and the
  logins itself, so the server's own locations and directives stay exactly the operator's;
- `include /etc/nginx/snippets/flowerbed-flower.conf;` in the HTTPS server for the dashboard's
  name, on the line after the server's `{`, marked as flowerbed's. With
  flower_existing_site_include = False the deploy prints the line instead, and verify.py checks
  it is there. No certbot, no port 80 site of flowerbed's: the site has its own.

A marked line is the only change ever made to an operator's file, and it is taken out again
(the file then as it was, byte for byte) when the site is no longer the dashboard's. Every
edit goes live through `nginx -t` or is undone.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pyinfra import host, logger
from pyinfra.api import FactBase, StringCommand, deploy, operation

from . import facts
from .hostfiles import Absent, PathStates, RootFile, entry_commands, root_files
from .inputs.edge import Dashboard
from .nginx import (
    HTTP_SITE,
    HTTPS_SITE,
    checked_or_restored,
    dashboard_context,
    listen_port,
    nginx_file,
    reload_nginx,
)
from .render import render
from .settings import DashboardProxy, Site
from .shell import command, refused
from .units import unit_running

SNIPPET = "/etc/nginx/snippets/flowerbed-flower.conf"
MARKER = "# added by flowerbed (flower_existing_site_include)"
INCLUDE = f"include {SNIPPET};"
INCLUDE_LINE = f"    {INCLUDE}  {MARKER}"
assert not set(MARKER) & set("\\/.[]*^$"), "sed reads the marker as a basic regexp"

# nginx's tokens: whitespace, a comment (only where a token starts), quoted strings, braces and
# semicolons, and words (a `#` inside a word is part of it).
TOKEN = re.compile(r"""\s+|#[^\n]*|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[{};]|[^\s{};"']+""")


@dataclass(frozen=True)
class ServerBlock:
    """A `server { ... }` of an nginx file, as far as placing the include line needs."""

    opening_line: int  # 1-based: the line of its `{`
    opening_alone: bool  # nothing but a comment follows the `{` on that line
    names: tuple[str, ...]
    tls: bool  # listens with ssl (or on 443)
    includes: tuple[str, ...]


def server_blocks(text: str) -> list[ServerBlock]:
    """The server blocks of an nginx file (at its top or in `http`), parsed as nginx reads it."""
    found: list[ServerBlock] = []
    stack: list[dict | None] = []  # per open block: a server's record, or None
    words: list[str] = []
    line = 1
    for match in TOKEN.finditer(text):
        token, start = match.group(), match.start()
        if token == "{":
            opens_server = words[:1] == ["server"] and all(
                block is None for block in stack
            )  # (a server inside a server is no server block of a site)
            rest = text[start + 1 :].split("\n", 1)[0].strip()
            stack.append(
                {"line": line, "alone": not rest or rest.startswith("#"), "names": [],
                 "tls": False, "includes": []} if opens_server else None
            )  # fmt: skip
            words = []
        elif token == "}":
            block = stack.pop() if stack else None
            if block is not None:
                found.append(
                    ServerBlock(block["line"], block["alone"], tuple(block["names"]),
                                block["tls"], tuple(block["includes"]))
                )  # fmt: skip
            words = []
        elif token == ";":
            if stack and stack[-1] is not None and words:
                directive(stack[-1], words)
            words = []
        elif not token.isspace() and not token.startswith("#"):
            words.append(token.strip("\"'") if token[:1] in "\"'" else token)
        line += token.count("\n")
    return found


def directive(server: dict, words: list[str]) -> None:
    name, args = words[0], words[1:]
    if name == "server_name":
        server["names"] += [a.lower().rstrip(".") for a in args]
    elif name == "listen" and args:
        server["tls"] |= "ssl" in args or listen_port(f"listen {args[0]};") == 443
    elif name == "include" and args:
        server["includes"].append(args[0])


@dataclass(frozen=True)
class SiteFile:
    """The operator's file (its real path, its text) and every file under /etc/nginx that holds
    a line flowerbed added."""

    path: str
    real_path: str
    text: str | None  # None: no such file
    marked: tuple[str, ...]

    def server(self, name: str) -> ServerBlock | None:
        """The first HTTPS server for `name`, as nginx picks it."""
        servers = server_blocks(self.text or "")
        return next((s for s in servers if s.tls and name in s.names), None)


class ExistingSite(FactBase):
    """The operator's site file, and the files under /etc/nginx holding flowerbed's marker."""

    def command(self, path: str) -> StringCommand:
        quoted = shlex.quote(path)
        script = "; ".join(
            (
                f"echo R $(readlink -f {quoted})",
                f"if [ -f {quoted} ]; then sed 's/^/L /' {quoted}; else echo N; fi",
                f"grep -rlF -e {shlex.quote(MARKER)} /etc/nginx 2>/dev/null | sed 's/^/M /'",
                "true",
            )
        )
        return StringCommand("sh", "-c", shlex.quote(script))

    @staticmethod
    def default() -> dict:
        return {}

    def process(self, output: list[str]) -> dict:
        lines = [line[2:] for line in output if line.startswith("L ")]
        real = next((line[2:] for line in output if line.startswith("R ")), "")
        return {
            "real_path": real.strip(),
            "text": None if "N" in output else "".join(f"{line}\n" for line in lines),
            "marked": tuple(line[2:] for line in output if line.startswith("M ")),
        }


def site_file(path: str, found: dict | None = None) -> SiteFile:
    """The operator's file from the ExistingSite fact (`found`, or asked now)."""
    found = facts.ask(ExistingSite, path=path) if found is None else found
    return SiteFile(path, found.get("real_path") or path, found.get("text"),
                    found.get("marked", ()))  # fmt: skip


def include_verdict(found: SiteFile, name: str) -> tuple[bool, str]:
    """Whether the operator's HTTPS server for `name` includes the dashboard (verify.py)."""
    server = found.server(name)
    if server is not None and SNIPPET in server.includes:
        return True, ""
    return False, site_problem(found, name, add_include=False) or (
        f"the HTTPS server for {name} in {found.path} (line {server.opening_line}) does not "
        f"include Flower's locations: add `{INCLUDE}` there, or set "
        "flower_existing_site_include = True and run the deploy"
    )


def site_problem(found: SiteFile, name: str, add_include: bool) -> str | None:
    """Why the dashboard cannot go into the operator's server; None when it can."""
    where = f"flower_existing_site = {found.path!r}"
    if found.text is None:
        return f"{found.path} does not exist on this host ({where}): name your site's file"
    server = found.server(name)
    if server is None:
        return (
            f"{found.path} has no HTTPS server (listen ... ssl) with server_name {name} "
            f"({where}): set flower_fqdn to your site's name, or name the file that serves it"
        )
    if add_include and SNIPPET not in server.includes and not server.opening_alone:
        return (
            f"{found.path}:{server.opening_line}: the server's `{{` shares its line with other "
            f"directives, so flowerbed does not edit it: add `{INCLUDE}` inside that server "
            "yourself and set flower_existing_site_include = False"
        )
    return None


# --- operations -----------------------------------------------------------------------------


@operation(is_idempotent=True)
def existing_site_usable(path: str, server_name: str, add_include: bool):
    """
    Fail the host, before anything changes on it, unless `path` holds an HTTPS server for
    `server_name` that can take the dashboard's include line.
    """
    problem = site_problem(site_file(path), server_name, add_include)
    if problem is None:
        host.noop(f"{path} serves {server_name} over HTTPS")
        return
    yield from refused(problem)


def marked_lines_removed(paths: tuple[str, ...]):
    """Commands that take flowerbed's marked line out of each file, each through `nginx -t`."""
    for path in paths:
        backup = f"{path}.flowerbed-old"
        yield command("cp", "-p", path, backup)
        yield command("sed", "-i", "-e", f"/{MARKER}$/d", path)  # (no BRE special in MARKER)
        yield checked_or_restored(path, backup)


@operation()
def flower_included(path: str, server_name: str, add_include: bool):
    """
    Ensure the HTTPS server for `server_name` in `path` includes the dashboard's locations: with
    `add_include`, flowerbed adds the line (marked) after the server's `{`; otherwise the deploy
    prints the line to add. A marked line in any other file is taken out.
    """
    found = site_file(path)
    elsewhere = tuple(p for p in found.marked if p != found.real_path)
    yield from marked_lines_removed(elsewhere)
    server = found.server(server_name)
    if server is None or SNIPPET in server.includes:
        if not elsewhere:
            host.noop(f"{path} includes {SNIPPET}")
        return
    if not add_include:
        host.log_styled(
            f"add this line to {path}, inside the HTTPS server for {server_name} (line "
            f"{server.opening_line}), then reload nginx: {INCLUDE}",
            fg="yellow",
            log_func=logger.warning,
        )
        return
    real, backup = found.real_path, f"{found.real_path}.flowerbed-old"
    yield command("cp", "-p", real, backup)
    yield command("sed", "-i", "-e", f"{server.opening_line}a\\", "-e", INCLUDE_LINE, real)
    yield checked_or_restored(real, backup)


@operation()
def flower_not_included():
    """No file under /etc/nginx holds a line flowerbed added, and the dashboard's locations file
    is gone (nginx -t proves nothing else includes it, or it is put back and the host fails)."""
    found = facts.ask(ExistingSite, path="")
    current = facts.ask(PathStates, paths=(SNIPPET,)).get(SNIPPET)
    if not found["marked"] and not current:
        host.noop(f"no site includes {SNIPPET}")
        return
    yield from marked_lines_removed(found["marked"])
    if current:
        backup = f"{SNIPPET}.flowerbed-old"
        yield command("cp", "-p", SNIPPET, backup)
        yield from entry_commands(Absent(SNIPPET), current)
        yield checked_or_restored(SNIPPET, backup)


# --- the files ------------------------------------------------------------------------------


def in_site_context(site: Dashboard, proxy: DashboardProxy, existing: Site) -> dict:
    return {
        **dashboard_context(site, proxy, in_site=True),
        "existing_site": existing.existing_site,
        "snippet": SNIPPET,
        "http_level": HTTPS_SITE,
    }


def http_level_text(site: Dashboard, proxy: DashboardProxy, existing: Site) -> str:
    return render("nginx-existing-site-http.conf.j2", **in_site_context(site, proxy, existing))


def locations_text(site: Dashboard, proxy: DashboardProxy, existing: Site) -> str:
    return render("nginx-existing-site.conf.j2", **in_site_context(site, proxy, existing))


# --- deploys --------------------------------------------------------------------------------


@deploy("nginx: your site can take Flower")
def existing_site_checked(site: Site, name: str) -> None:
    """Before anything changes: the operator's file serves `name` over HTTPS (and, if flowerbed
    adds the include line, has a place for it)."""
    if not site.existing_site:
        return
    facts.expect(ExistingSite, path=site.existing_site)
    existing_site_usable(
        name=f"{site.existing_site} serves {name} over HTTPS",
        path=site.existing_site,
        server_name=name,
        add_include=site.existing_site_include,
    )


@deploy("nginx: Flower inside your site")
def nginx_in_site(site: Dashboard, proxy: DashboardProxy, existing: Site, *changes) -> None:
    """Flower's locations in the operator's HTTPS server (`existing`: flower_existing_site,
    flower_existing_site_include); reloaded if they, the include line or the login names
    changed."""
    path = existing.existing_site
    unit_running("nginx is enabled and running", "nginx")
    locations = root_files(
        "Flower's locations for your site (snippets/)",
        [RootFile(SNIPPET, locations_text(site, proxy, existing))],
    )
    http_level = nginx_file(
        "Flower's zones and maps (conf.d/)",
        HTTPS_SITE,
        lambda _: http_level_text(site, proxy, existing),
    )
    own_site = root_files("No port 80 site of flowerbed's (yours has its own)", [Absent(HTTP_SITE)])
    facts.expect(ExistingSite, path=path)
    included = flower_included(
        name=f"Your site includes Flower's locations ({path})",
        path=path,
        server_name=site.fqdn,
        add_include=existing.existing_site_include,
    )
    reload_nginx(
        "Test and reload nginx (Flower's locations, your site or login names changed)",
        locations, http_level, own_site, included, *changes,
    )  # fmt: skip


@deploy("nginx: no site includes Flower")
def nginx_in_no_site() -> None:
    """A site of flowerbed's own: no operator's file keeps a line flowerbed added."""
    facts.expect(ExistingSite, path="")
    facts.expect(PathStates, paths=(SNIPPET,))
    reload_nginx(
        "Test and reload nginx (your site no longer includes Flower)",
        flower_not_included(name="No site includes Flower's locations"),
    )
