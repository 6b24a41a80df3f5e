"""Hostile and careless input, table-driven: each bad value is refused before any host is
touched, the message names the key and the fix, and a secret in it is never shown.

Each row runs the whole preflight of one host (its data, then the secrets it names) the way
deploy.py does. `secret` is text that must not appear in the message (every value of a row's
environment is a secret too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from pyinfra.api import Inventory
from settings_helpers import OAUTH, REPO, valid_data

from flowerbed.inputs.secrets import read_secret
from flowerbed.preflight import InvalidDeploy, check_hosts, host_problems
from flowerbed.settings import SettingsError

ENVIRON = {
    "FLOWERBED_BROKER_URL": "redis://:Str0ng-broker-pw@10.0.0.5:6379/0",
    "FLOWERBED_DASHBOARD_USERS": "admin:Str0ng-dash-pw-1",
    "OAUTH_SECRET": "oauth-client-secret-4711",
    "COOKIE_SECRET": "k9Xv2PqL7sWm4TzR8yNc3BfH6dJg1QaE",
}
SITE = {"flower_fqdn": "flower.example.com"}
APP = {"flower_app": "proj.celery:app"}
ONE_LINE = "one line"
CREDENTIALS = "without user:password@"
EVERYWHERE_SSH = "flower_firewall_allow_ssh_from_anywhere = True"
EVERYWHERE_METRICS = "flower_firewall_allow_metrics_from_anywhere = True"
PERCENT = "percent-encode"
OWN_ACCOUNT = "e.g. flower_"
OWN_DIR = "like /opt/flower"
DIRECTIVE = "single directives like 'access_log off;'"
AUTH_FORMS = "'.*@example.com'"
STRONG = "12 characters or more"
RANDOM = "openssl rand"
NAME_NOT_VALUE = "put the value in .env"


@dataclass(frozen=True)
class Bad:
    key: str  # named in the message
    fix: str  # part of the fix the message gives
    data: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    secret: str = ""  # must not appear in the message


ROWS = {
    # --- a newline or control character in a value that reaches a host's file
    "proxy-newline": Bad(
        "flower_egress_proxy",
        ONE_LINE,
        {"flower_egress_proxy": 'http://p:3128\nAPT::Update::Pre-Invoke {"id"};'},
    ),
    "index-crlf": Bad(
        "flower_pip_index_url", ONE_LINE, {"flower_pip_index_url": "https://pypi.internal/\r\n"}
    ),
    "oauth-key-newline": Bad("flower_oauth2_key", ONE_LINE, {"flower_oauth2_key": "client\nid"}),
    "email-newline": Bad("flower_tls_email", ONE_LINE, {"flower_tls_email": "ops@example.com\n"}),
    "snippet-newline": Bad(
        "flower_nginx_server_snippets[0]",
        ONE_LINE,
        {"flower_nginx_server_snippets": ["access_log off;\nauth_basic off;"]},
    ),
    "alias-tab": Bad(
        "flower_server_aliases[0]", ONE_LINE, {"flower_server_aliases": ["www.example.com\t"]}
    ),
    "app-nul": Bad(
        "flower_app", ONE_LINE, {"flower_app": "proj:app\x00", "flower_app_source": "proj==1"}
    ),
    "fqdn-newline": Bad("flower_fqdn", ONE_LINE, {"flower_fqdn": "flower.example.com\n"}),
    "columns-newline": Bad(
        "flower_tasks_columns", ONE_LINE, {"flower_tasks_columns": "name,\nstate"}
    ),
    "dns-plugin-escape": Bad(
        "flower_tls_dns_plugin", ONE_LINE, {"flower_tls_dns_plugin": "cloudflare\x1b[2J"}
    ),
    # --- credentials in proxy, mirror, ACME and redirect URLs
    "proxy-empty-user": Bad(
        "flower_egress_proxy",
        CREDENTIALS,
        {"flower_egress_proxy": "http://:pw-proxy-1@p:3128"},
        {},
        "pw-proxy-1",
    ),
    "proxy-user-pw": Bad(
        "flower_egress_proxy",
        CREDENTIALS,
        {"flower_egress_proxy": "http://u:pw-proxy-2@p:3128"},
        {},
        "pw-proxy-2",
    ),
    "proxy-token": Bad(
        "flower_egress_proxy",
        CREDENTIALS,
        {"flower_egress_proxy": "http://tok-proxy-3@p:3128"},
        {},
        "tok-proxy-3",
    ),
    "index-user-pw": Bad(
        "flower_pip_index_url",
        CREDENTIALS,
        {"flower_pip_index_url": "https://u:pw-index-1@pypi.internal/simple/"},
        {},
        "pw-index-1",
    ),
    "index-empty-user": Bad(
        "flower_pip_index_url",
        CREDENTIALS,
        {"flower_pip_index_url": "https://:pw-index-2@pypi.internal/simple/"},
        {},
        "pw-index-2",
    ),
    "acme-empty-user": Bad(
        "flower_tls_acme_directory",
        CREDENTIALS,
        {"flower_tls_acme_directory": "https://:pw-acme-1@acme.internal/dir"},
        {},
        "pw-acme-1",
    ),
    "redirect-credentials": Bad(
        "flower_oauth2_redirect_uri",
        CREDENTIALS,
        {"flower_oauth2_redirect_uri": "https://u:pw-redirect@flower.example.com/login"},
        {},
        "pw-redirect",
    ),
    "proxy-other-scheme": Bad(
        "flower_egress_proxy",
        "http://",
        {"flower_egress_proxy": "socks5://u:pw-socks@p:1080"},
        {},
        "pw-socks",
    ),
    "proxy-bad-port": Bad(
        "flower_egress_proxy", "e.g. http://", {"flower_egress_proxy": "http://p:99999"}
    ),
    "app-source-user-token": Bad(
        "flower_app_source",
        "git+ssh://git@host",
        {**APP, "flower_app_source": "git+https://u:tok-app-1@git.example.com/p.git@v1"},
        {},
        "tok-app-1",
    ),
    "app-source-token": Bad(
        "flower_app_source",
        "deploy key",
        {**APP, "flower_app_source": "git+https://tok-app-2@github.com/o/p.git@abc"},
        {},
        "tok-app-2",
    ),
    "app-source-pep508": Bad(
        "flower_app_source",
        "token-free mirror",
        {**APP, "flower_app_source": "p @ git+https://u:tok-app-3@git.example.com/p.git"},
        {},
        "tok-app-3",
    ),
    # --- SSH or /metrics open to the whole internet without the switch that says so
    "ssh-everywhere-v4": Bad(
        "flower_admin_sources", EVERYWHERE_SSH, {"flower_admin_sources": ["0.0.0.0/0"]}
    ),
    "ssh-everywhere-v6": Bad(
        "flower_admin_sources",
        EVERYWHERE_SSH,
        {"flower_admin_sources": ["198.51.100.7/32", "::/0"]},
    ),
    "metrics-everywhere-v4": Bad(
        "flower_monitoring_sources",
        EVERYWHERE_METRICS,
        {"flower_monitoring_sources": ["0.0.0.0/0"]},
    ),
    "metrics-everywhere-v6": Bad(
        "flower_monitoring_sources", EVERYWHERE_METRICS, {"flower_monitoring_sources": ["::/0"]}
    ),
    # --- weak or sample secrets
    "logins-sample": Bad(
        "flower_auth_users_env", RANDOM, {}, {"FLOWERBED_DASHBOARD_USERS": "admin:CHANGE-ME"}
    ),
    "logins-one-char": Bad(
        "flower_auth_users_env", STRONG, {}, {"FLOWERBED_DASHBOARD_USERS": "admin:x"}
    ),
    "logins-trailing-space": Bad(
        "flower_auth_users_env",
        "remove the spaces",
        {},
        {"FLOWERBED_DASHBOARD_USERS": "admin:Str0ng-pw-99 "},
    ),
    "logins-second-weak": Bad(
        "flower_auth_users_env",
        STRONG,
        {},
        {"FLOWERBED_DASHBOARD_USERS": "alice:Str0ng-alice-pw,bob:short-pw"},
    ),
    "logins-user-as-password": Bad(
        "flower_auth_users_env",
        STRONG,
        {},
        {"FLOWERBED_DASHBOARD_USERS": "administrator1:administrator1"},
    ),
    "logins-classic": Bad(
        "flower_auth_users_env", STRONG, {}, {"FLOWERBED_DASHBOARD_USERS": "ops:letmein"}
    ),
    "broker-sample": Bad(
        "flower_broker_url_env",
        RANDOM,
        {},
        {"FLOWERBED_BROKER_URL": "redis://:CHANGE-ME@broker.example.com:6379/0"},
    ),
    "broker-leading-space": Bad(
        "flower_broker_url_env",
        "remove the spaces",
        {},
        {"FLOWERBED_BROKER_URL": " redis://:Str0ng-1@h/0"},
    ),
    "broker-newline": Bad(
        "flower_broker_url_env", "one-line", {}, {"FLOWERBED_BROKER_URL": "redis://:Str0ng\n@h/0"}
    ),
    "cookie-sample": Bad(
        "flower_cookie_secret_env", RANDOM, OAUTH, {"COOKIE_SECRET": "a-long-random-string"}
    ),
    "cookie-short": Bad("flower_cookie_secret_env", "32", OAUTH, {"COOKIE_SECRET": "k9Xv2PqL7s"}),
    "cookie-repetitive": Bad("flower_cookie_secret_env", "32", OAUTH, {"COOKIE_SECRET": "ab" * 20}),
    "oauth-secret-sample": Bad(
        "flower_oauth2_secret_env", RANDOM, OAUTH, {"OAUTH_SECRET": "CHANGE-ME"}
    ),
    "flower-basic-auth-short": Bad(
        "flower_basic_auth['alice']",
        STRONG,
        {**OAUTH, "flower_basic_auth": {"alice": "PW_ALICE"}},
        {"PW_ALICE": "short-pw1"},
    ),
    "flower-basic-auth-comma": Bad(
        "flower_basic_auth['alice']",
        "without ','",
        {**OAUTH, "flower_basic_auth": {"alice": "PW_ALICE"}},
        {"PW_ALICE": "Str0ng,pw-4711"},
    ),
    # --- broker URLs, parsed in full
    "broker-slash-in-password": Bad(
        "flower_broker_url_env",
        PERCENT,
        {},
        {"FLOWERBED_BROKER_URL": "redis://:Str0ng/pw@h:6379/0"},
    ),
    "broker-hash-in-password": Bad(
        "flower_broker_url_env",
        PERCENT,
        {},
        {"FLOWERBED_BROKER_URL": "redis://:Str0ng#pw@h:6379/0"},
    ),
    "broker-question-in-password": Bad(
        "flower_broker_url_env",
        PERCENT,
        {},
        {"FLOWERBED_BROKER_URL": "amqp://u:Str0ng?pw@h:5672//"},
    ),
    "broker-no-host": Bad(
        "flower_broker_url_env",
        "broker.example.com",
        {},
        {"FLOWERBED_BROKER_URL": "redis://:Str0ngpw@:6379/0"},
    ),
    "broker-port-letters": Bad(
        "flower_broker_url_env", "6379", {}, {"FLOWERBED_BROKER_URL": "redis://:Str0ngpw@h:63a79/0"}
    ),
    "broker-port-range": Bad(
        "flower_broker_url_env", "6379", {}, {"FLOWERBED_BROKER_URL": "redis://:Str0ngpw@h:70000/0"}
    ),
    "broker-http": Bad(
        "flower_broker_url_env", "redis://", {}, {"FLOWERBED_BROKER_URL": "http://:Str0ngpw@h/"}
    ),
    "broker-not-a-url": Bad(
        "flower_broker_url_env", "redis://", {}, {"FLOWERBED_BROKER_URL": "Str0ngpw-only"}
    ),
    "broker-db-not-a-number": Bad(
        "flower_broker_url_env", "/0", {}, {"FLOWERBED_BROKER_URL": "redis://:Str0ngpw@h:6379/zero"}
    ),
    "broker-api-scheme": Bad(
        "flower_broker_api_env",
        "15672/api/",
        {"flower_broker_api_env": "FLOWERBED_BROKER_API"},
        {"FLOWERBED_BROKER_API": "ftp://u:Str0ng-api@rabbit/"},
    ),
    # --- names: only grammar here; whose a name is, the host decides (test_ownership_units.py)
    "service-firewall": Bad(
        "flower_service", "flower_service = 'flower'", {"flower_service": "flowerbed-firewall"}
    ),
    "service-flowerbed": Bad(
        "flower_service", "flower_service = 'flower'", {"flower_service": "flowerbed"}
    ),
    "user-upper-case": Bad("flower_user", "like 'flower'", {"flower_user": "Admin"}),
    "group-space": Bad("flower_group", "like 'flower'", {"flower_group": "incus admin"}),
    # --- directories flowerbed would own: inside /etc, /opt, /srv, /usr/local, /var/lib, /var/opt
    "config-tmp": Bad("flower_config_dir", OWN_DIR, {"flower_config_dir": "/tmp"}),
    "config-var-tmp": Bad("flower_config_dir", OWN_DIR, {"flower_config_dir": "/var/tmp/flower"}),
    "config-etc": Bad("flower_config_dir", OWN_DIR, {"flower_config_dir": "/etc/"}),
    "config-run": Bad("flower_config_dir", OWN_DIR, {"flower_config_dir": "/run/flower"}),
    "install-root": Bad("flower_install_dir", OWN_DIR, {"flower_install_dir": "/"}),
    "install-usr": Bad("flower_install_dir", OWN_DIR, {"flower_install_dir": "/usr"}),
    "install-opt": Bad("flower_install_dir", OWN_DIR, {"flower_install_dir": "/opt"}),
    "install-home": Bad("flower_install_dir", OWN_DIR, {"flower_install_dir": "/home/x/venv"}),
    "claim-kind": Bad("flower_names_claimed[0]", "user:NAME", {"flower_names_claimed": ["admin"]}),
    "claim-not-flowers": Bad(
        "flower_names_claimed[0]",
        "claim only names Flower uses",
        {"flower_names_claimed": ["user:root"]},
    ),
    "claim-bad-path": Bad(
        "flower_names_claimed[0]", "/opt/x", {"flower_names_claimed": ["dir:/etc/../root"]}
    ),
    "config-dotdot": Bad(
        "flower_config_dir", "/opt/x", {"flower_config_dir": "/etc/flower/../nginx"}
    ),
    # --- nginx snippets: one simple directive, never one that decides access or routing
    "snippet-brace": Bad(
        "flower_nginx_server_snippets[0]", DIRECTIVE, {"flower_nginx_server_snippets": ["}"]}
    ),
    "snippet-location": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["location /x { auth_basic off; }"]},
    ),
    "snippet-auth-off": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["auth_basic off;"]},
    ),
    "snippet-satisfy": Bad(
        "flower_nginx_server_snippets[1]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["access_log off;", "satisfy any;"]},
    ),
    "snippet-allow": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["allow all;"]},
    ),
    "snippet-include": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["include /tmp/x.conf;"]},
    ),
    "snippet-two": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["access_log off; auth_basic off;"]},
    ),
    "snippet-proxy-pass": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["proxy_pass http://evil;"]},
    ),
    "snippet-return": Bad(
        "flower_nginx_server_snippets[0]",
        DIRECTIVE,
        {"flower_nginx_server_snippets": ["return 200 'hi';"]},
    ),
    # --- flower_auth by Flower's own rule, not as a regexp
    "auth-regexp": Bad("flower_auth", AUTH_FORMS, {**OAUTH, "flower_auth": r".*@example\.com"}),
    "auth-bare-star": Bad("flower_auth", AUTH_FORMS, {**OAUTH, "flower_auth": "*@example.com"}),
    "auth-domain-wildcard": Bad("flower_auth", AUTH_FORMS, {**OAUTH, "flower_auth": ".*@.*"}),
    "auth-list-and-wildcard": Bad(
        "flower_auth", AUTH_FORMS, {**OAUTH, "flower_auth": "a@example.com|.*@example.com"}
    ),
    "auth-anchors": Bad("flower_auth", AUTH_FORMS, {**OAUTH, "flower_auth": "^admin@example.com$"}),
    "auth-group": Bad(
        "flower_auth", AUTH_FORMS, {**OAUTH, "flower_auth": "(alice|bob)@example.com"}
    ),
    # --- names repeated after normalisation (certbot would renew on every run)
    "alias-is-fqdn": Bad(
        "flower_server_aliases[0]", "once", {"flower_server_aliases": ["flower.example.com"]}
    ),
    "alias-is-fqdn-case-dot": Bad(
        "flower_server_aliases[0]", "once", {"flower_server_aliases": ["FLOWER.example.com."]}
    ),
    "alias-twice": Bad(
        "flower_server_aliases[1]",
        "once",
        {"flower_server_aliases": ["www.example.com", "WWW.example.com"]},
    ),
    # --- url prefix
    "prefix-dotdot": Bad("flower_url_prefix", "ops/flower", {"flower_url_prefix": "../admin"}),
    "prefix-dot": Bad("flower_url_prefix", "ops/flower", {"flower_url_prefix": "flower/./x"}),
    "prefix-dotdot-end": Bad("flower_url_prefix", "ops/flower", {"flower_url_prefix": "flower/.."}),
    "prefix-escape": Bad("flower_url_prefix", "ops/flower", {"flower_url_prefix": "flower%2f.."}),
    "prefix-dotfile": Bad("flower_url_prefix", "ops/flower", {"flower_url_prefix": ".well-known"}),
    "prefix-empty-segment": Bad("flower_url_prefix", "ops/flower", {"flower_url_prefix": "a//b"}),
    # --- numbers with an upper bound
    "rollback-huge": Bad(
        "flower_firewall_rollback_seconds",
        "45 to 600",
        {"flower_firewall_rollback_seconds": 1_000_000_000},
    ),
    "max-tasks-huge": Bad("flower_max_tasks", "10000000", {"flower_max_tasks": 10**9}),
    "inspect-timeout-huge": Bad(
        "flower_inspect_timeout", "60000", {"flower_inspect_timeout": 10**7}
    ),
    "read-timeout-huge": Bad(
        "flower_nginx_proxy_read_timeout", "3600", {"flower_nginx_proxy_read_timeout": 86400}
    ),
    "healthcheck-timeout-huge": Bad(
        "flower_healthcheck_timeout", "3600", {"flower_healthcheck_timeout": 10**6}
    ),
    "stop-timeout-huge": Bad("flower_stop_timeout_sec", "3600", {"flower_stop_timeout_sec": 10**6}),
    "purge-huge": Bad(
        "flower_purge_offline_workers", "31536000", {"flower_purge_offline_workers": 10**9}
    ),
    "hsts-huge": Bad(
        "flower_nginx_hsts_max_age", "63072000", {"flower_nginx_hsts_max_age": 10**10}
    ),
    "save-interval-huge": Bad(
        "flower_state_save_interval", "86400000", {"flower_state_save_interval": 10**12}
    ),
    # --- a secret put where a variable NAME belongs is never quoted back
    "broker-url-in-name": Bad(
        "flower_broker_url_env",
        NAME_NOT_VALUE,
        {"flower_broker_url_env": "redis://:Str0ng-misplaced@h:6379/0"},
        {},
        "Str0ng-misplaced",
    ),
    "logins-in-name": Bad(
        "flower_auth_users_env",
        NAME_NOT_VALUE,
        {"flower_auth_users_env": "admin:Str0ng-misplaced-2"},
        {},
        "Str0ng-misplaced-2",
    ),
    "cookie-in-name": Bad(
        "flower_cookie_secret_env",
        NAME_NOT_VALUE,
        {**OAUTH, "flower_cookie_secret_env": "k9Xv2PqL7sWm4TzR8yNc3BfH6dJg1QaE"},
        {},
        "k9Xv2PqL7s",
    ),
    "oauth-secret-in-name": Bad(
        "flower_oauth2_secret_env",
        NAME_NOT_VALUE,
        {**OAUTH, "flower_oauth2_secret_env": "gho_abc123Secret"},
        {},
        "gho_abc123Secret",
    ),
    "password-as-variable": Bad(
        "flower_basic_auth['alice']",
        NAME_NOT_VALUE,
        {**OAUTH, "flower_basic_auth": {"alice": "Str0ng-misplaced-3"}},
        {},
        "Str0ng-misplaced-3",
    ),
    "login-as-user-name": Bad(
        "flower_basic_auth",
        "FLOWERBED_FLOWER_PASSWORD_ALICE",
        {**OAUTH, "flower_basic_auth": {"alice:Str0ng-misplaced-4": "PW"}},
        {},
        "Str0ng-misplaced-4",
    ),
    "dns-token-in-name": Bad(
        "flower_tls_dns_credentials_env",
        NAME_NOT_VALUE,
        {"flower_tls_dns_credentials_env": "dns_cloudflare_api_token = t0ken-xyz"},
        {},
        "t0ken-xyz",
    ),
    "broker-api-in-name": Bad(
        "flower_broker_api_env",
        NAME_NOT_VALUE,
        {"flower_broker_api_env": "http://u:Str0ng-misplaced-5@rabbit:15672/api/"},
        {},
        "Str0ng-misplaced-5",
    ),
}


def fake_host(name: str, data: dict) -> SimpleNamespace:
    return SimpleNamespace(name=name, data=SimpleNamespace(dict=lambda: data))


def preflight_message(bad: Bad) -> str:
    host = fake_host("h1", valid_data(**{**SITE, **bad.data}))
    checked, errors = host_problems(host, {**ENVIRON, **bad.env})
    assert checked is None and errors, "the bad value got through"
    return "\n".join(str(error) for error in errors)


def test_the_table_is_wide():
    assert len(ROWS) >= 60
    assert len(
        {(tuple(sorted(map(str, b.data.items()))), str(b.env)) for b in ROWS.values()}
    ) == len(ROWS), "every row is a distinct input"


@pytest.mark.parametrize("data", [SITE, {**SITE, **OAUTH}], ids=["basic", "oauth"])
def test_the_good_inputs_pass(data):
    checked, errors = host_problems(fake_host("h1", valid_data(**data)), ENVIRON)
    assert errors == [] and checked.secrets.broker_url.value == ENVIRON["FLOWERBED_BROKER_URL"]


@pytest.mark.parametrize("bad", ROWS.values(), ids=ROWS.keys())
def test_a_bad_input_names_the_key_and_the_fix_and_hides_secrets(bad: Bad):
    message = preflight_message(bad)
    line = next((line for line in message.splitlines() if line.startswith(f"{bad.key}:")), None)
    assert line, f"no message for {bad.key}:\n{message}"
    problem, _, fix = line.partition(". Fix: ")
    assert fix and bad.fix in line, line
    for secret in [bad.secret, *bad.env.values()]:
        if secret:
            assert secret.strip() not in message, "a secret is in the message"


def test_every_sample_from_env_example_is_refused():
    """A sample line of .env.example (CHANGE-ME, the cookie secret's placeholder) copied as it
    is never passes, whichever variable it lands in."""
    lines = (REPO / ".env.example").read_text().splitlines()
    assignments = [line.lstrip("# ").split("=", 1) for line in lines if "=" in line]
    samples = {
        name: value
        for name, value in assignments
        if re.fullmatch(r"[A-Z_]+", name) and ("CHANGE-ME" in value or "random-string" in value)
    }
    assert {"FLOWERBED_BROKER_URL", "FLOWERBED_DASHBOARD_USERS", "FLOWERBED_COOKIE_SECRET"} <= set(
        samples
    )
    for name, value in samples.items():
        with pytest.raises(SettingsError, match="sample value"):
            read_secret("some_key_env", name, {name: value})


def test_every_problem_of_every_host_at_once():
    """Three bad values on two hosts: one from --data (both hosts), one per host."""
    inventory = Inventory(
        (
            [
                ("h1", {**SITE, "flower_egress_proxy": "http://:pw-proxy-9@p:3128"}),
                ("h2", {"flower_fqdn": "h2.example.com", "flower_admin_sources": ["0.0.0.0/0"]}),
            ],
            valid_data(),
        ),
        override_data={"flower_max_tasks": 0},
    )
    with pytest.raises(InvalidDeploy) as caught:
        check_hosts(list(inventory), ENVIRON)
    message = str(caught.value)
    lines = message.splitlines()
    assert lines[0].startswith("3 problems") and "no host was changed" in lines[0]
    assert len(lines) == 4
    assert any(
        line.startswith("hosts h1, h2: flower_max_tasks: 0 is below 1")
        and line.endswith("(set by --data)")
        for line in lines
    ), "a value bad for both hosts is reported once, naming both"
    assert any(
        line.startswith("host h1: flower_egress_proxy:") and "inventory for host h1" in line
        for line in lines
    )
    assert any(line.startswith("host h2: flower_admin_sources:") for line in lines)
    assert "pw-proxy-9" not in message


def test_a_secrets_problem_points_at_the_environment_not_the_data():
    inventory = Inventory(([("h1", SITE)], valid_data()))
    with pytest.raises(InvalidDeploy) as caught:
        check_hosts(list(inventory), {**ENVIRON, "FLOWERBED_DASHBOARD_USERS": "admin:x"})
    (line,) = str(caught.value).splitlines()[1:]
    assert line.startswith("host h1: flower_auth_users_env: the password of 'admin'")
    assert line.endswith("(the variable's value, from the environment or .env)")


def test_bad_values_and_bad_secrets_are_reported_together_one_each():
    host = fake_host("h1", valid_data(**SITE, **OAUTH, flower_max_tasks=0, flower_user="Root"))
    bad_secrets = {"FLOWERBED_BROKER_URL": "redis://:CHANGE-ME@h/0", "COOKIE_SECRET": "short"}
    _, errors = host_problems(host, {**ENVIRON, **bad_secrets})
    assert [error.key for error in errors] == [
        "flower_max_tasks",
        "flower_user",
        "flower_broker_url_env",
        "flower_cookie_secret_env",
    ]
    assert all("\n" not in str(error) for error in errors), "one problem, one line"
