"""The decoy (flowerbed/decoy.py) on a real nginx: the rendered map and rewrite, the headers-more
module Debian ships, and an htpasswd from htpasswd_lines. Whether auth_basic ran a bcrypt check
is read from nginx's own error log: `user "X": password mismatch` after a check, `user "X" was
not found` without one (what let timing list the logins), `no user/password was provided` for
a request without a login. Timing itself is measured on lab hosts (tests/lab/test_login_ban.py,
tests/lab/test_inside_site.py)."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowerbed.auth import htpasswd_lines, parse_htpasswd
from flowerbed.decoy import (
    DECOY_AUTHORIZATION,
    DECOY_PASSWORD,
    DECOY_USER,
    REWRITE,
    decoy_context,
    name_pattern,
    users_map_text,
)
from flowerbed.inputs.logins import USER_NAME, Login
from flowerbed.render import render

MODULE = "/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so"
LOGINS = (Login("alice", "alice-pass-1"), Login("a.b", "ab-pass-2"))
OTHER_FLOWER = Login("beta-ops", "beta-pass-3")  # a login of another Flower on the host


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def decoy_http(users_map: Path) -> str:
    """The http-level maps as the deploy renders them, with the map file at `users_map`."""
    return render("nginx-dashboard-decoy.conf.j2", **{**decoy_context(), "users_map": users_map})


class Nginx:
    """nginx on a port of its own, as root's test user, never as a service."""

    def __init__(self, root: Path, server: str, level: str = "info", extra_http: str = ""):
        assert shutil.which("nginx"), "nginx is missing: `make unit-packages`"
        assert Path(MODULE).exists(), "the headers-more module is missing: `make unit-packages`"
        self.root, self.port = root, free_port()
        user = "user root root;" if os.geteuid() == 0 else ""  # (the files are under tmp_path)
        (root / "www").mkdir(exist_ok=True)
        (root / "www" / "index.html").write_text("in\n")
        (root / "nginx.conf").write_text(f"""
load_module {MODULE};
{user}
pid {root}/nginx.pid;
error_log {root}/error.log {level};
events {{}}
http {{
  log_format sent '$remote_user';
  access_log {root}/access.log sent;
{decoy_http(root / "users.map")}
{extra_http}
  server {{
    listen 127.0.0.1:{self.port};
{server.replace("ROOT", str(root))}
  }}
}}
""")
        self.argv = ["nginx", "-p", str(root), "-c", str(root / "nginx.conf")]

    def __enter__(self) -> Nginx:
        subprocess.run([*self.argv, "-t", "-q"], check=True, capture_output=True)
        subprocess.run([*self.argv, "-g", "daemon on;"], check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not self.answers():
            assert time.monotonic() < deadline, "nginx never answered"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run([*self.argv, "-s", "stop"], check=False, capture_output=True)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def get(self, authorization: str | None) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Authorization": authorization} if authorization is not None else {}
            connection.request("GET", "/", headers=headers)
            answer = connection.getresponse()
            return answer.status, answer.read().decode()
        finally:
            connection.close()

    def error_log(self) -> str:
        return (self.root / "error.log").read_text(errors="replace")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTH_SERVER = f"""
    {REWRITE}
    auth_basic "Flower";
    auth_basic_user_file ROOT/htpasswd;
    location / {{ root ROOT/www; }}
"""


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoy")
    text = htpasswd_lines(LOGINS, {}, others=(OTHER_FLOWER.user,))
    (root / "htpasswd").write_text(text)
    # the map names every Flower's logins on the host (the other Flower's included)
    (root / "users.map").write_text(users_map_text([*(x.user for x in LOGINS), "beta-ops"]))
    with Nginx(root, AUTH_SERVER) as nginx:
        yield nginx


def checked(nginx: Nginx, authorization: str | None) -> tuple[int, str]:
    """(status, what nginx's error log says of this request)."""
    before = len(nginx.error_log())
    status, _ = nginx.get(authorization)
    new = nginx.error_log()[before:]
    said = [line for line in new.splitlines() if "keepalive" not in line]
    return status, "\n".join(said)


BCRYPT_RAN_FOR_DECOY = f'user "{DECOY_USER}": password mismatch'


@pytest.mark.parametrize(
    ("user", "password", "status", "said"),
    [
        ("alice", "alice-pass-1", 200, ""),
        ("a.b", "ab-pass-2", 200, ""),
        ("alice", "wrong", 401, 'user "alice": password mismatch'),
        ("bob", "wrong", 401, BCRYPT_RAN_FOR_DECOY),
        ("ALICE", "alice-pass-1", 401, BCRYPT_RAN_FOR_DECOY),  # names are case-sensitive
        ("axb", "ab-pass-2", 401, BCRYPT_RAN_FOR_DECOY),  # `.` is a dot, not any character
        ("alice\n", "alice-pass-1", 401, BCRYPT_RAN_FOR_DECOY),  # \z, not $
        ("xalice", "alice-pass-1", 401, BCRYPT_RAN_FOR_DECOY),
        (DECOY_USER, DECOY_PASSWORD, 401, BCRYPT_RAN_FOR_DECOY),
        (DECOY_USER, "anything", 401, BCRYPT_RAN_FOR_DECOY),  # the decoy never logs in
        # another Flower's login at this Flower: one check against the decoy's hash, no entry
        ("beta-ops", "beta-pass-3", 401, 'user "beta-ops": password mismatch'),
    ],
)
def test_every_name_costs_one_bcrypt_check_and_only_a_login_gets_in(
    dashboard, user, password, status, said
):
    answer, log = checked(dashboard, basic(user, password))
    assert answer == status, log
    if said:
        assert said in log, log
    else:
        assert "password mismatch" not in log and "was not found" not in log, log
    assert "was not found" not in log, "refused without a bcrypt check: timing tells the name"


def test_no_login_is_refused_without_a_bcrypt_check(dashboard):
    for authorization in (None, "Basic !!!", "Bearer x", basic("", "pw")):
        answer, log = checked(dashboard, authorization)
        assert answer == 401
        assert "password mismatch" not in log and "was not found" not in log, log
    assert "no user/password was provided" in checked(dashboard, None)[1]


def test_the_access_log_keeps_the_name_that_was_sent(dashboard):
    checked(dashboard, basic("mallory", "guess"))
    deadline = time.monotonic() + 5  # (nginx writes its access log after the answer)
    while "mallory" not in (dashboard.root / "access.log").read_text():
        assert time.monotonic() < deadline, "the sent name is not in the access log"
        time.sleep(0.05)


def test_the_htpasswd_ends_with_the_decoy_and_keeps_its_hash():
    first = htpasswd_lines(LOGINS, {}, others=("beta-ops", "alice", "beta-ops"))
    lines = first.splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "a.b", "beta-ops", DECOY_USER]
    hashes = parse_htpasswd(first)
    assert hashes["beta-ops"] == hashes[DECOY_USER], "another Flower's names get the decoy's hash"
    assert hashes[DECOY_USER].startswith("$2b$10$")
    assert not bcrypt.checkpw(DECOY_PASSWORD.encode(), hashes[DECOY_USER].encode())
    again = htpasswd_lines(LOGINS, hashes, others=("beta-ops",))
    assert parse_htpasswd(again) == hashes, "a second run keeps every hash (0 changes)"
    assert not USER_NAME.fullmatch(DECOY_USER), "the decoy's name is never a login's"
    stale = htpasswd_lines(LOGINS, {**hashes, DECOY_USER: "not-a-hash"})
    assert parse_htpasswd(stale)[DECOY_USER].startswith("$2b$10$")


def test_the_map_names_each_login_as_an_exact_escaped_regex():
    assert name_pattern("alice") == '"~\\Aalice\\z"'
    assert name_pattern("a.b") == '"~\\Aa\\.b\\z"'
    text = users_map_text(["bob", "alice", "bob"])
    assert text.splitlines()[-2:] == ['"~\\Aalice\\z" 1;', '"~\\Abob\\z" 1;']
    with pytest.raises(ValueError):
        name_pattern('x" 1; "~')
    assert basic(DECOY_USER, DECOY_PASSWORD) == DECOY_AUTHORIZATION


# --- Hypothesis: generated names through nginx's own map --------------------------------------

login_names = st.from_regex(r"\A[A-Za-z0-9._@-]{1,12}\Z", fullmatch=True)
probe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=":\x00"),
    min_size=1,
    max_size=16,
)


@st.composite
def logins_and_probes(draw):
    logins = draw(st.lists(login_names, min_size=1, max_size=4, unique=True))
    near = st.sampled_from(logins).flatmap(
        lambda name: st.sampled_from(
            [name, name + "\n", name.upper(), name.lower(), name.replace(".", "x"),
             name + " ", "x" + name, name[:-1] or "z", name + name]
        )
    )  # fmt: skip
    probes = draw(st.lists(st.one_of(near, probe_text, login_names), min_size=1, max_size=8))
    return logins, probes


MAP_SERVER = """
    location / { return 200 "$flowerbed_login_known $flowerbed_authorization"; }
"""
EXAMPLES = 40


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=logins_and_probes())
def test_nginx_map_lets_exactly_the_logins_through(tmp_path_factory, case):
    logins, probes = case
    root = tmp_path_factory.mktemp("decoy-map")
    (root / "users.map").write_text(users_map_text(logins))
    with Nginx(root, MAP_SERVER, level="error") as nginx:
        for probe in probes:
            sent = basic(probe, "pw")
            status, body = nginx.get(sent)
            known, _, authorization = body.partition(" ")
            assert status == 200
            if probe in logins:
                assert (known, authorization) == ("1", sent), probe
            else:
                assert (known, authorization) == ("0", DECOY_AUTHORIZATION), (probe, logins)
    print(f"(one of {EXAMPLES} examples: {len(logins)} logins, {len(probes)} names sent)")


# --- the packages: the module is in the Makefile's lists, and installed when missing ----------

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def make_list(name: str) -> set[str]:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{name} :="))
    return set(line.split(":=", 1)[1].split())


def test_every_unit_package_is_a_machine_package_and_the_module_is_both():
    unit, machine = make_list("UNIT_PACKAGES"), make_list("MACHINE_PACKAGES")
    assert unit <= machine, f"in UNIT_PACKAGES, not MACHINE_PACKAGES: {sorted(unit - machine)}"
    assert "libnginx-mod-http-headers-more-filter" in unit


def test_install_missing_counts_a_removed_but_not_purged_package_as_missing(tmp_path):
    """dpkg -s answers 0 for a package removed with its config files kept ("rc"): the Makefile
    asks for "ii" (fake dpkg-query and apt-get on PATH; nothing is installed)."""
    text = MAKEFILE.read_text()
    define = text[text.index("define install_missing") : text.index("endef") + len("endef")]
    (tmp_path / "Makefile").write_text(
        f"SHELL := /bin/bash\n{define}\nall:\n\t$(call install_missing,kept removed absent)\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text(
        '#!/bin/sh\nfor last; do :; done\ncase "$last" in kept) printf "ii ";; '
        'removed) printf "rc ";; *) exit 1;; esac\n'
    )
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "apt-get $*"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["make", "-s", "-C", str(tmp_path)], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    installs = [line for line in done.stdout.splitlines() if " install " in line]
    assert len(installs) == 1 and installs[0].endswith(" removed absent"), done.stdout
