"""Property-based proof (Hypothesis) for the settings' string values: thousands of generated
values per key, hostile ones included (quotes, separators, unicode, long values, paths, the
special words of each target file's format). Each one is either refused with a clean
SettingsError, never another exception, or, where it lands in a file, that file read back by
its own parser holds exactly the intended value: apt-config for the apt proxy, nft (load and
list, in a namespace of its own) for the firewall's comments, pip's config parser for pip.conf.

The examples each test ran are counted and printed at the end of the module (visible without
-s), so a run shows how much was tried.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from settings_helpers import valid_data
from test_egress_units import apt_dump  # apt-config dump with only the given file

from flowerbed.firewall import ruleset
from flowerbed.packages import pip_conf
from flowerbed.render import render
from flowerbed.resources import DEFAULTS
from flowerbed.settings import SettingsError, load_settings

COUNTS: Counter[str] = Counter()

# The special words and characters of the files values land in: apt.conf, nftables, ini,
# systemd units and environment files, nginx, shells, URLs, paths.
SPECIAL = [
    '"', "'", "\\", ";", "{", "}", "#", "//", "/*", "*/", "$", "${X}", "%", "%n", "%%", "=",
    ":", "@", "?", "&", "|", "`", "$(id)", "\n", "\r", "\t", "\x00", " ", "\u00a0", "\u2028",
    "\ufeff", "é", "ß", "ǅ", "İ", "\U0001f600", "..", "../", "/etc/", "/", "~", "*", ",",
    "[", "]", "(", ")", "<", ">", "!", "+", "-", "_", ".", "0", "-1", "65536", "::", "[::1]",
    "APT::Update::Pre-Invoke", "#include", "#clear", "Dir::Etc", "include", "comment", "table",
    "chain", "accept", "drop", "flush ruleset", "[global]", "index-url", "proxy", "ExecStart",
    "Environment", "[Service]", "root", "off", "on", "true", "None", "http://", "https://",
    "git+https://", "redis://", "file://", "localhost", "0.0.0.0/0", "::/0", "flower",
    "example.com", "a@b.c", ".*@example.com", "x" * 300,
]  # fmt: skip
hostile_text = st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=12)), max_size=8).map(
    "".join
)


def with_prefix(prefixes: list[str]) -> st.SearchStrategy[str]:
    """A hostile text, often after something that looks right (a scheme, a path, a default)."""
    return st.one_of(hostile_text, st.tuples(st.sampled_from(prefixes), hostile_text).map("".join))


STRING_KEYS = sorted(k for k, v in DEFAULTS.items() if isinstance(v, str))
LIST_KEYS = sorted(
    k for k, v in DEFAULTS.items() if isinstance(v, list) and k != "flower_firewall_openings"
)
PREFIXES = ["http://", "https://", "git+https://h/", "/opt/", "/etc/", "flower", "FLOWER_", ""]


def outcome(data: dict) -> str:
    """'refused' or 'accepted'; any exception other than SettingsError fails the test."""
    try:
        load_settings(valid_data(**data))
    except SettingsError as error:
        message = str(error)
        assert message and all(": " in line and "Fix: " in line for line in message.split("\n"))
        assert "Traceback" not in message
        return "refused"
    return "accepted"


FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
PER_KEY = settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)


@pytest.mark.parametrize("key", STRING_KEYS)
@PER_KEY
@given(value=with_prefix(PREFIXES))
def test_every_string_key_refuses_cleanly_or_accepts(key, value):
    COUNTS[f"{key} ({outcome({key: value})})"] += 1
    COUNTS["string keys, all examples"] += 1


@pytest.mark.parametrize("key", LIST_KEYS)
@PER_KEY
@given(value=st.lists(with_prefix(PREFIXES), max_size=3))
def test_every_list_key_refuses_cleanly_or_accepts(key, value):
    COUNTS[f"{key} ({outcome({key: value})})"] += 1
    COUNTS["list keys, all examples"] += 1


@settings(max_examples=1000, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.binary(),
                       st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                       st.lists(st.integers(), max_size=2)),
       key=st.sampled_from(sorted(DEFAULTS)))  # fmt: skip
def test_a_value_of_the_wrong_type_is_a_clean_error(key, value):
    COUNTS[f"wrong types ({outcome({key: value})})"] += 1


# --- apt: apt-config dump reads back exactly the proxy ---------------------------------------


URL_PARTS = st.lists(
    st.one_of(
        st.sampled_from(['"', "'", ";", "{", "}", "//", "#", "%22", "%", "$", "&", "=", "@",
                         "(", ")", "*", "+", ",", "!", "~", "[", "]", ":", "/", " ", "\\",
                         "APT::Update::Pre-Invoke", "#include", "é", "\u00a0"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_", max_size=8),
    ),
    max_size=8,
).map("".join)  # fmt: skip
PROXY = st.tuples(
    st.sampled_from(["http://", "https://", "http://proxy.internal:3128", "https://[2001:db8::1]"]),
    URL_PARTS,
).map("".join)


@pytest.fixture(scope="module")
def apt_defaults(tmp_path_factory):
    """(the directory every example's apt configuration is written in, apt's own settings)."""
    if not shutil.which("apt-config"):
        pytest.fail("apt-config (Debian's apt) is needed: this suite runs on Debian")
    directory = tmp_path_factory.mktemp("apt")
    return directory, apt_dump(directory, "")


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES)
@given(proxy=PROXY)
def test_apt_reads_back_exactly_the_proxy_or_it_is_refused(apt_defaults, proxy):
    try:
        settings_ = load_settings(valid_data(flower_egress_proxy=proxy))
    except SettingsError:
        COUNTS["apt proxy (refused)"] += 1
        return
    directory, defaults = apt_defaults
    dumped = apt_dump(directory, render("apt-proxy.conf.j2", proxy=settings_.egress.egress_proxy))
    added = {k: v for k, v in dumped.items() if defaults.get(k) != v and v != '"";'}
    assert added == {"Acquire::http::Proxy": f'"{proxy}";', "Acquire::https::Proxy": f'"{proxy}";'}
    COUNTS["apt proxy (accepted, read back by apt-config)"] += 1


# --- pip.conf: pip's own parser reads back exactly the index and the proxy --------------------


@settings(max_examples=1000, deadline=None)
@given(index=PROXY, proxy=PROXY)
def test_pip_reads_back_exactly_the_index_and_proxy_or_they_are_refused(index, proxy):
    try:
        data = valid_data(flower_pip_index_url=index, flower_egress_proxy=proxy)
        egress = load_settings(data).egress
    except SettingsError:
        COUNTS["pip.conf (refused)"] += 1
        return
    parser = configparser.RawConfigParser()  # what pip's Configuration reads files with
    parser.read_string(pip_conf(egress))
    assert parser.sections() == ["global"]
    values = dict(parser.items("global"))
    assert values.pop("index-url") == index and values.pop("proxy") == proxy
    assert set(values) == {"disable-pip-version-check", "no-input", "timeout", "retries", "cert"}
    COUNTS["pip.conf (accepted, read back by configparser)"] += 1


# --- nftables: the ruleset loads, and lists back each opening's purpose as its comment --------


PURPOSE = st.one_of(
    hostile_text,
    st.lists(
        st.sampled_from(['"', "\\", ";", "}", "{", "#", "comment", "accept", "drop", "a", "0",
                         "Redis", " ", "(", ")", ":", "/", "+", ",", "-", ".", "_", "é",
                         "flush ruleset", "\u00a0"]),
        min_size=1, max_size=12,
    ).map("".join),
)  # fmt: skip


@pytest.fixture(scope="module")
def nft_usable():
    if not (shutil.which("nft") and shutil.which("unshare") and os.geteuid() == 0):
        pytest.fail("nft needs nft and unshare (make unit-packages) and root")


@settings(max_examples=300, deadline=None, suppress_health_check=FIXTURES)
@given(purpose=PURPOSE, port=st.integers(min_value=1024, max_value=65535))
def test_nft_lists_back_exactly_the_purpose_or_it_is_refused(nft_usable, purpose, port):
    opening = {"port": port, "sources": ["10.0.0.0/24"], "purpose": purpose}
    try:
        firewall = load_settings(valid_data(flower_firewall_openings=[opening])).firewall
    except SettingsError:
        COUNTS["nft purpose (refused)"] += 1
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "flowerbed.nft"
        path.write_text(ruleset(firewall).text)
        listed = subprocess.run(
            ["unshare", "--net", "sh", "-c", f"nft -f {path} && nft list ruleset"],
            capture_output=True, text=True,
        )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    comments = [line.split('comment "', 1)[1] for line in listed.stdout.splitlines()
                if f"dport {port} " in line and 'comment "' in line]  # fmt: skip
    assert comments and all(c.rstrip().endswith('"') for c in comments), listed.stdout
    assert {c.rstrip()[:-1] for c in comments} == {f"{purpose}: flower_firewall_openings"}
    COUNTS["nft purpose (accepted, listed back by nft)"] += 1


@pytest.fixture(scope="module", autouse=True)
def example_counts(request):
    yield
    lines = [f"  {count:6d}  {what}" for what, count in sorted(COUNTS.items())]
    total = sum(c for w, c in COUNTS.items() if "all examples" not in w)
    text = "\n".join(["", f"Hypothesis examples run by {__name__}: {total}", *lines])
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown without -s
        print(text)
