"""Issue 19's input findings, each refused by an allow-list or a grammar, with a clean message:
nginx snippets, values that crashed the pre-flight, every error at once, blame, broker URLs,
and the files taken from the operator's machine."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from pem_helpers import ca_pem
from pyinfra.api import Inventory
from settings_helpers import defaults, error_for, settings_with, valid_data

from flowerbed.preflight import InvalidDeploy, check_hosts, host_problems
from flowerbed.settings import SettingsError
from flowerbed.validation import NGINX_ALLOWED, nginx_snippet_problem

SNIPPETS = "flower_nginx_server_snippets"
UNCHECKED = "flower_nginx_server_snippets_unchecked"


# --- nginx snippets: an allow-list, and a loud opt-in for anything else ----------------------


@pytest.mark.parametrize(
    "snippet",
    [
        "client_body_temp_path /etc;",  # issue 19: nginx chowns it to its worker user
        "access_log /etc/nologin;",  # issue 19: creates /etc/nologin
        "limit_req_dry_run on;",  # issue 19: every throttle off
        "limit_conn_dry_run on;",
        "error_log /etc/passwd;",
        "proxy_temp_path /root;",
        "ssl_certificate /etc/shadow;",
        "root /;",
        "access_log syslog:server=10.0.0.1;",
        "client_max_body_size 0;",  # 0 = no limit
        "client_body_timeout 0;",
        "add_header Access-Control-Allow-Origin *;",
        "add_header Set-Cookie x=1;",
        "add_header X-Frame-Options SAMEORIGIN;",
        'add_header Cache-Control "$http_authorization";',
        "gzip $x;",
        "auth_basic off;",
        "satisfy any;",
        "set $flowerbed_cross_site 0;",
    ],
)
def test_snippets_off_the_allow_list_are_refused(snippet):
    message = error_for(**{SNIPPETS: [snippet]})
    assert message.startswith(f"{SNIPPETS}[0]: "), message
    assert f"{UNCHECKED} = True" in message or "one simple nginx directive" in message


@pytest.mark.parametrize(
    "snippet",
    [
        "access_log off;",
        "log_not_found off;",
        "gzip on;",
        "gzip_types text/css application/json;",
        "gzip_proxied expired no-cache auth;",
        "gzip_comp_level 5;",
        "client_body_timeout 30s;",
        "keepalive_timeout 75s 60s;",
        "large_client_header_buffers 4 16k;",
        "charset utf-8;",
        "add_header X-Robots-Tag noindex always;",
        "add_header Content-Security-Policy \"default-src 'self'; frame-ancestors 'none'\" always;",
        "  etag   off ;  ",
    ],
)
def test_snippets_on_the_allow_list_pass(snippet):
    assert settings_with(**{SNIPPETS: [snippet]}).nginx.server_snippets == (snippet,)


def test_every_allowed_directive_has_an_example_that_passes():
    examples = {
        "add_header": "X-Robots-Tag noindex", "charset": "utf-8", "gzip_types": "text/plain",
        "gzip_proxied": "any", "large_client_header_buffers": "4 8k", "if_modified_since": "exact",
        "access_log": "off", "keepalive_requests": "100", "gzip_comp_level": "1",
        "gzip_min_length": "1000", "keepalive_timeout": "0",
    }  # fmt: skip
    for directive in NGINX_ALLOWED:
        argument = examples.get(directive) or (
            "1k" if "size" in directive else "10s" if "timeout" in directive else "on"
        )
        assert nginx_snippet_problem(f"{directive} {argument};") is None, directive


def test_the_opt_in_lets_any_single_directive_through_but_never_a_block():
    risky = "limit_req_dry_run on;"
    assert settings_with(**{SNIPPETS: [risky], UNCHECKED: True}).nginx.server_snippets == (risky,)
    for broken in ("access_log off; auth_basic off;", "location / { }", "} server {", "a 'b;"):
        message = error_for(**{SNIPPETS: [broken], UNCHECKED: True})
        assert message.startswith(f"{SNIPPETS}[0]: ") and "one simple nginx directive" in message


def test_the_refusal_names_the_issue_s_directives_and_the_opt_in():
    message = error_for(
        **{
            SNIPPETS: [
                "client_body_temp_path /etc;",
                "access_log /etc/nologin;",
                "limit_req_dry_run on;",
                "proxy_read_timeout 300s;",
            ]
        }
    )
    lines = message.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{SNIPPETS}[{i}]" for i in range(4)]
    assert "'client_body_temp_path', which is not one of the directives" in lines[0]
    assert "gives 'access_log' arguments flowerbed does not allow" in lines[1]
    assert "'limit_req_dry_run', which is not one of the directives" in lines[2]
    assert "set flower_nginx_proxy_read_timeout instead" in lines[3]


# --- crashes become errors; every error at once; blame only what was set ---------------------


def test_a_pasted_network_with_a_space_and_host_bits_is_a_clean_error():
    message = error_for(flower_admin_sources=["198.51.100.7/24 "])
    assert message.startswith("flower_admin_sources[0]: '198.51.100.7/24' has host bits set")
    assert "'198.51.100.7/32' for that one address" in message


def test_a_dns_credentials_file_that_is_not_text_is_an_error_naming_the_key(tmp_path):
    from flowerbed.inputs.edge import dns_credentials

    binary = tmp_path / "creds.ini"
    binary.write_bytes(b"\xff\xfe\x00dns_cloudflare_api_token = \x81\x82")
    tls = settings_with(
        flower_tls_challenge="dns-01", flower_tls_dns_plugin="cloudflare",
        flower_tls_dns_credentials_env="CF_INI",
    ).tls  # fmt: skip
    with pytest.raises(SettingsError) as caught:
        dns_credentials(tls, {"CF_INI": str(binary)})
    assert str(caught.value).startswith(
        f"flower_tls_dns_credentials_env: $CF_INI names {binary}, which is not UTF-8 text"
    )
    binary.write_text("dns_cloudflare_api_token = 0123456789abcdef\n")
    assert dns_credentials(tls, {"CF_INI": str(binary)}).value.startswith("dns_cloudflare")


ENVIRON = {
    "FLOWERBED_BROKER_URL": "redis://:Str0ng-broker-pw@10.0.0.5:6379/0",
    "FLOWERBED_DASHBOARD_USERS": "admin:Str0ng-dash-pw-1",
}


def preflight_errors(data: dict, environ: dict) -> list[SettingsError]:
    host = SimpleNamespace(name="h1", data=SimpleNamespace(dict=lambda: valid_data(**data)))
    checked, errors = host_problems(host, environ)
    assert checked is None
    return errors


def test_a_bad_mode_a_weak_password_and_a_bad_number_are_three_errors_in_one_run():
    errors = preflight_errors(
        {"flower_fqdn": "flower.example.com", "flower_auth_mode": "bogus", "flower_max_tasks": 0},
        {**ENVIRON, "FLOWERBED_DASHBOARD_USERS": "admin:short"},
    )
    assert [error.key for error in errors] == [
        "flower_max_tasks", "flower_auth_mode", "flower_auth_users_env",
    ]  # fmt: skip
    assert "shorter than 12 characters" in str(errors[2])
    assert "as if flower_max_tasks, flower_auth_mode held their defaults" in errors[2].source


def test_a_refused_key_is_not_reported_again_by_the_checks_that_stand_in_for_it():
    errors = preflight_errors(
        {"flower_fqdn": "flower.example.com", "flower_broker_url_env": "redis://x"}, ENVIRON
    )
    assert [error.key for error in errors] == ["flower_broker_url_env"]


def test_a_value_never_set_is_not_blamed_on_group_data():
    data = valid_data(flower_fqdn="flower.example.com")
    data.pop("flower_allowed_sources")  # the default [] stands: an operator's choice not made
    inventory = Inventory(([("h1", {})], {**defaults(), **data}))
    with pytest.raises(InvalidDeploy) as caught:
        check_hosts(list(inventory), ENVIRON)
    (line,) = str(caught.value).splitlines()[1:]
    assert line.startswith("host h1: flower_allowed_sources: an empty list")
    assert line.endswith("(not set: flowerbed's default [])"), line
    assert "group_data/all.py)" not in line
    inventory = Inventory(([("h1", {})], {**data, "flower_max_tasks": 0}))
    with pytest.raises(InvalidDeploy) as caught:
        check_hosts(list(inventory), ENVIRON)
    assert str(caught.value).splitlines()[1].endswith("(set in group_data/all.py)")


# --- broker URLs: redis over a unix socket, as kombu reads it --------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis+socket:///run/redis/redis-server.sock",
        "redis+socket://:Str0ng-broker-pw@/run/redis/redis-server.sock?virtual_host=2",
        "redis+socket://:p%2Fw@/var/run/redis.sock",
    ],
)
def test_a_redis_socket_url_passes_and_kombu_reads_the_same_socket(url):
    from kombu.utils.url import url_to_parts

    from flowerbed.inputs.secrets import broker_url

    flower = settings_with().flower
    assert broker_url(flower, {"FLOWERBED_BROKER_URL": url}).value == url
    parts = url_to_parts(url.partition("+")[2])  # what kombu's redis transport parses
    socket = re.sub(r"^redis\+socket://([^@]*@)?", "", url).split("?")[0]
    assert parts.scheme == "socket" and "/" + parts.path == socket


@pytest.mark.parametrize(
    "url",
    [
        "redis+socket://",
        "redis+socket://host/run/redis.sock",
        "redis+socket:///run/../etc/redis.sock",
        "redis+socket://:pw/x@/run/redis.sock",
        "redis+socket:///run/redis.sock?socket_timeout=0",
        "redis+socket:///run/redis.sock?virtual_host=x",
        "redis+unix:///run/redis.sock",
    ],
)
def test_a_bad_redis_socket_url_is_refused_without_showing_it(url):
    from flowerbed.inputs.secrets import broker_url

    with pytest.raises(SettingsError) as caught:
        broker_url(settings_with().flower, {"FLOWERBED_BROKER_URL": url})
    assert str(caught.value).startswith("flower_broker_url_env: $FLOWERBED_BROKER_URL ")
    assert "pw" not in str(caught.value) and "/run/" not in str(caught.value).split("Fix")[0]


# --- files from the operator's machine --------------------------------------------------------


def test_an_egress_ca_must_be_one_certificate_never_a_private_key(tmp_path):
    certificate, key = ca_pem()
    (tmp_path / "ok.pem").write_bytes(certificate)
    assert settings_with(flower_egress_ca_certificates=[str(tmp_path / "ok.pem")])
    bad = {
        "key.pem": key,
        "both.pem": certificate + key,
        "two.pem": certificate + ca_pem("Other CA")[0],
        "empty.crt": b"",
        "binary.crt": b"\xff\xfe\x00\x01",
        "garbled.pem": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    message = error_for(flower_egress_ca_certificates=[str(tmp_path / name) for name in bad])
    lines = message.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"flower_egress_ca_certificates[{i}]" for i in range(len(bad))
    ]
    assert "holds a PRIVATE KEY, which would be uploaded world-readable" in lines[0]
    assert "holds a PRIVATE KEY" in lines[1]
    assert "(PEM blocks found: CERTIFICATE, CERTIFICATE)" in lines[2]
    assert "(PEM blocks found: none)" in lines[3] and "(PEM blocks found: none)" in lines[4]
    assert "does not parse as an X.509 certificate" in lines[5]
    assert "PRIVATE KEY-----" not in message and "MII" not in message, "no content is quoted"


def test_two_egress_cas_with_the_same_stem_are_refused(tmp_path):
    for name in ("a/proxy.pem", "b/proxy.crt", "c/other.pem"):
        (tmp_path / name).parent.mkdir()
        (tmp_path / name).write_bytes(ca_pem()[0])
    paths = [str(tmp_path / name) for name in ("a/proxy.pem", "c/other.pem", "b/proxy.crt")]
    message = error_for(flower_egress_ca_certificates=paths)
    assert message.startswith("flower_egress_ca_certificates[2]: ")
    assert "same file name as flower_egress_ca_certificates[0]: both would be proxy.crt" in message


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("git+https://gitlab.example.com/g/p.git@v1?private_token=glpat-secret1", "query string"),
        ("https://gitlab.example.com/p.tar.gz?token=glpat-secret1", "query string"),
        ("p @ https://x.example.com/p.zip?X-Amz-Signature=secret1", "query string"),
        ("git+https://oauth2:glpat-secret1@gitlab.example.com/g/p.git", "credentials"),
        ("git+http://git.example.com/p.git@v1", "git+http://"),
        ("http://files.example.com/p.tar.gz", "http://"),
        ("git+git://git.example.com/p.git", "git+git://"),
        ("git+file:///srv/p.git", "git+file://"),
    ],
)
def test_an_app_source_url_with_a_token_or_in_clear_is_refused(source, says):
    message = error_for(flower_app="proj:app", flower_app_source=source)
    assert message.startswith("flower_app_source: ") and says in message, message
    assert "secret1" not in message
    if "query" in says or "credentials" in says:
        assert "~/.netrc" in message


@pytest.mark.parametrize(
    "source",
    ["git+https://git.example.com/p.git@v1#egg=p", "git+ssh://git@git.example.com/p.git@abc123"],
)
def test_token_free_encrypted_app_sources_pass(source):
    assert settings_with(flower_app="proj:app", flower_app_source=source).flower.app_is_git


def test_a_local_app_is_a_python_project_and_never_a_hidden_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for directory in ("proj", "notes", ".ssh", ".config/app", "work/.hidden/app"):
        (tmp_path / directory).mkdir(parents=True)
    for directory in ("proj", ".ssh", ".config/app", "work/.hidden/app"):
        (tmp_path / directory / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    app = {"flower_app": "proj:app"}
    proj = settings_with(**app, flower_app_source=str(tmp_path / "proj")).flower
    assert proj.app_is_local
    notes = error_for(**app, flower_app_source=str(tmp_path / "notes"))
    assert "has neither pyproject.toml nor setup.py at its top" in notes
    for hidden, part in (
        (".ssh", ".ssh"),
        (".config/app", ".config"),
        ("work/.hidden/app", ".hidden"),
    ):
        message = error_for(**app, flower_app_source=str(tmp_path / hidden))
        assert f"is inside the hidden directory {part!r}" in message, message
    monkeypatch.chdir(tmp_path)
    assert "hidden directory '.ssh'" in error_for(**app, flower_app_source="proj/../.ssh")
