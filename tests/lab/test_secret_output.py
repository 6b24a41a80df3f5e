"""No secret in any output, even on failure: -vvv deploys, and the journal a failed check prints.

On h3 (shared: put back as the session deployed it). At -vvv pyinfra prints every fact's
output, so a fact holding the secret env file's digest would print it; and a failed health
check prints Flower's journal tail, where a malformed broker URL makes kombu log a piece of
its password.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shlex
from urllib.parse import urlsplit

import pytest
from conftest import Lab
from deploy_helpers import DeployResult, run_deploy

from flowerbed.render import systemd_quote

pytestmark = pytest.mark.lab

HOST = "h3"
ENV_FILE = "/etc/flower/flower.env"
VERBOSE = ("-y", "--json", "-vvv")
FAST_CHECK = {"flower_healthcheck_timeout": 5}
HEALTH_CHECK_ONLY = "tests/deploys/flower_health_only.py"


def fingerprints(value: str) -> list[str]:
    """The value and the forms it could leak in: its hex digests and base64."""
    data = value.encode()
    return [
        value,
        hashlib.sha256(data).hexdigest(),
        hashlib.sha1(data).hexdigest(),
        hashlib.md5(data).hexdigest(),
        base64.b64encode(data).decode(),
    ]


def assert_nothing_of(result: DeployResult, *values: str) -> None:
    for value in values:
        for form in fingerprints(value):
            assert form not in result.stdout, f"a form of a secret is in stdout: {form[:4]}..."
            assert form not in result.stderr, f"a form of a secret is in stderr: {form[:4]}..."


def env_file(lab: Lab) -> str:
    return lab.ssh(HOST, ["cat", ENV_FILE], check=True).stdout


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", f":{password}@", 1)


@pytest.fixture
def h3_put_back(lab: Lab):
    before = run_deploy([HOST])
    assert before.ok, before.explain()
    yield HOST
    after = run_deploy([HOST])
    assert after.ok, after.explain()


def test_vvv_deploys_show_no_secret_nor_its_digest(lab: Lab, h3_put_back: str):
    url = lab.secrets["FLOWERBED_BROKER_URL"]
    password = urlsplit(url).password
    lab.ssh(HOST, ["rm", "-f", ENV_FILE], check=True)
    first = run_deploy([HOST], flags=VERBOSE)
    assert first.ok, first.explain()
    assert f"Will create {ENV_FILE} (secret: content not shown)" in first.stderr
    assert "Loaded fact" in first.stderr, "-vvv really printed facts"
    first_env = env_file(lab)
    assert_nothing_of(first, password, url, first_env)

    rotated = with_password(url, f"Wr0ng-{secrets.token_hex(8)}")
    changed = run_deploy([HOST], FAST_CHECK, flags=VERBOSE, env={"FLOWERBED_BROKER_URL": rotated})
    assert not changed.ok, "the broker refuses the wrong password: the health check fails"
    assert f"Will update {ENV_FILE} (secret: content not shown)" in changed.stderr
    assert re.search(rf"\[{HOST}\] +journal: ", changed.log), "the journal tail was printed"
    assert_nothing_of(changed, urlsplit(rotated).password, rotated, env_file(lab), first_env)
    assert_nothing_of(changed, password, url)


def test_a_malformed_broker_urls_password_is_not_in_the_printed_journal(lab: Lab, h3_put_back: str):
    """Validation refuses such a URL; written on the host by hand, it shows what kombu logs.
    Then the deploy's health check alone (what a deploy prints when Flower fails)."""
    first_piece, rest = f"Kx{secrets.token_hex(3)}", f"w0rd-{secrets.token_hex(6)}"
    password = f"{first_piece}/ss#{rest}"
    broker = lab.state["broker"]["address"]
    malformed = f"redis://:{password}@{broker}/0"
    line = f"CELERY_BROKER_URL={systemd_quote(malformed)}"
    lab.ssh(HOST, f"printf '%s\\n' {shlex.quote(line)} > {ENV_FILE}", check=True)
    lab.ssh(HOST, "systemctl reset-failed flower; systemctl restart flower", check=True)

    checked = run_deploy([HOST], FAST_CHECK, flags=VERBOSE, deploy_file=HEALTH_CHECK_ONLY)
    assert not checked.ok, checked.explain()
    kombu = "Port could not be cast to integer value as '***'"
    assert re.search(rf"\[{HOST}\] +journal: .*{re.escape(kombu)}", checked.log), checked.log[
        -3000:
    ]
    assert_nothing_of(checked, password, malformed, first_piece, rest)
