"""Issue 19's input findings, each refused by an allow-list or a grammar, with a clean message:
nginx snippets, values that crashed the pre-flight, every error at once, blame, broker URLs,
and the files taken from the operator's machine."""

from __future__ import annotations

import pytest
from settings_helpers import error_for, settings_with

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
