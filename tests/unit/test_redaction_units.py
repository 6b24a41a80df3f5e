"""What the health check prints is redacted (files/flower-healthcheck, no lab needed).

Its report reaches the operator's terminal and CI logs: the failed check prints Flower's
journal tail. Every URL's password and every secret from Flower's environment file is masked,
including the pieces a URL parser cuts out of a malformed broker URL (kombu's "Port could not
be cast to integer value as 'pa'" for `redis://:pa/ss#word@host`).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

from flowerbed.render import systemd_quote

SCRIPT = Path(__file__).resolve().parents[2] / "files" / "flower-healthcheck"


def load_script():
    loader = importlib.machinery.SourceFileLoader("flower_healthcheck", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


healthcheck = load_script()


def redacted(line: str, env: dict[str, str]) -> str:
    return healthcheck.redact(line, healthcheck.secret_strings(env))


KOMBU_PORT_ERROR = "ValueError: Port could not be cast to integer value as {!r}"


@pytest.mark.parametrize(
    ("broker_url", "leaked_piece"),
    [
        ("redis://:pa/ss#word@10.77.0.1:6379/0", "pa"),  # kombu's own words, measured in the lab
        ("redis://:Secr3tPart#morE@10.77.0.1:6379/0", "Secr3tPart"),
        ("redis://:abc?def@10.77.0.1:6379/0", "abc"),
        ("amqp://flower:r4bbit/pw@rabbit:5672//", "r4bbit"),
        ("rediss://user:x[y]z@cache:6380/1", "x"),  # one character: too short to matter
        ("redis://:p@ss:w0rd@10.77.0.1:6379/0", "p@ss"),
    ],
)
def test_the_piece_kombu_logs_of_a_malformed_broker_url_is_masked(broker_url, leaked_piece):
    env = {"CELERY_BROKER_URL": broker_url}
    password = healthcheck.url_password(broker_url)
    line = redacted(KOMBU_PORT_ERROR.format(leaked_piece), env)
    if len(leaked_piece) >= healthcheck.SHORTEST_SECRET_PIECE:
        assert line == KOMBU_PORT_ERROR.format("***")
    whole = redacted(f"consumer: Cannot connect to {broker_url}: Error 111.", env)
    assert password not in whole and "***" in whole
    for piece in healthcheck.URL_DELIMITERS.split(password):
        if len(piece) >= healthcheck.SHORTEST_SECRET_PIECE:
            assert f"'{piece}'" not in redacted(f"as '{piece}'", env), piece


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Cannot connect to amqp://guest:gu3st@rabbit//: timed out.",
            "Cannot connect to amqp://guest:***@rabbit//: timed out.",
        ),
        ("broker redis://:a/b#c@host:6379/0 down", "broker redis://:***@host:6379/0 down"),
        ("'redis://:p@ss@h:1/0', next", "'redis://:***@h:1/0', next"),
        ("Broker: redis://:**@10.77.0.1:6379/0", "Broker: redis://:***@10.77.0.1:6379/0"),
        ("https://user:tok%2Fen@api.example/x", "https://user:***@api.example/x"),
    ],
)
def test_any_url_password_is_masked_even_one_the_host_does_not_know(line, expected):
    assert healthcheck.redact(line, []) == expected


def test_urls_without_a_password_and_ordinary_words_are_left_alone():
    env = {"CELERY_BROKER_URL": "redis://:pa/ss#word@10.77.0.1:6379/0"}
    lines = [
        '  File "/usr/lib/python3.11/urllib/parse.py", line 182, in port',
        "Connected to redis://10.77.0.1:6379/0 (password)",
        "mailto:ops@example.org wrote",
    ]
    for line in lines:
        assert redacted(line, env) == line


def test_every_secret_of_the_environment_file_is_masked(tmp_path):
    secrets = {
        "CELERY_BROKER_URL": 'redis://:q"uo\\te$d`pw@10.77.0.1:6379/0',
        "FLOWER_BASIC_AUTH": "admin:first-Pass,ops:sec:ond",
        "FLOWER_COOKIE_SECRET": "c00kie-secret-0123456789abcdef",
        "FLOWER_OAUTH2_SECRET": "oauth-s3cret",
        "FLOWER_BROKER_API": "http://mgmt:api-Pa55@rabbit:15672/api/",
    }
    env_file = tmp_path / "flower.env"
    env_file.write_text(
        "# Managed by flowerbed\n"
        + "".join(f"{key}={systemd_quote(value)}\n" for key, value in secrets.items())
    )
    env = healthcheck.read_env(str(env_file))
    assert env == secrets, "the systemd-quoted file reads back exactly"
    journal = " | ".join(
        [*secrets.values(), "first-Pass", "sec:ond", "api-Pa55", 'q"uo\\te$d`pw', "login ops"]
    )
    line = redacted(journal, env)
    for value in [*secrets.values(), "first-Pass", "sec:ond", "api-Pa55", 'q"uo\\te$d`pw']:
        assert value not in line
    assert line.endswith("login ops"), "user names are not secret"
    assert healthcheck.basic_auth_header(env) == {"Authorization": "Basic YWRtaW46Zmlyc3QtUGFzcw=="}
