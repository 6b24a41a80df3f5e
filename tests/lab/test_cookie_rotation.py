"""The OAuth cookie secret on real lab hosts: one per host, Secure cookies, and its rotation.

Two fresh hosts in OAuth mode against the lab's OpenID Connect provider (test_oauth.py's
fixtures). A session cookie is minted here the way Flower (tornado) signs one, with each host's
own key (flowerbed.inputs.secrets.host_cookie_secret of the lab's cookie secret): it gets into
its own host and is refused by the other, as a cookie minted by root on one host would be. Rotations
write to a copy of .lab/lab.env; the hosts go back to the lab's secrets afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, Lab
from deploy_helpers import assert_no_secret, run_deploy
from dotenv import dotenv_values
from test_edge import curl
from test_oauth import oauth_data, oidc

sys.path.insert(0, str(REPO))
from flowerbed.inputs.secrets import Secret, host_cookie_secret  # noqa: E402

pytestmark = pytest.mark.lab

FIXTURES = (oidc,)  # test_oauth.py's provider, used here too

FLEET_INVENTORY = "tests/inventories/lab.py"


def signed_cookie(secret: str, name: str, value: str) -> str:
    """tornado's create_signed_value, version 2 (what Flower's set_secure_cookie sends)."""

    def field(text: bytes) -> bytes:
        return b"%d:" % len(text) + text

    encoded = base64.b64encode(value.encode())
    stamp = str(int(time.time())).encode()
    to_sign = b"|".join(
        [b"2", field(b"0"), field(stamp), field(name.encode()), field(encoded), b""]
    )
    signature = hmac.new(secret.encode(), to_sign, hashlib.sha256).hexdigest().encode()
    return (to_sign + signature).decode()


@pytest.fixture(scope="module")
def pair(lab: Lab, oidc: dict, module_hosts) -> list[dict]:
    """Two fresh hosts, each deployed in OAuth mode (its own redirect URI)."""
    hosts = [module_hosts(prefix="ck"), module_hosts(prefix="ck")]
    env = {"FLOWERBED_TEST_HOST_DATA": json.dumps({h["name"]: host_data(h, oidc) for h in hosts})}
    deployed = run_deploy([h["name"] for h in hosts], inventory=FLEET_INVENTORY, env=env)
    assert deployed.ok, deployed.explain()
    return hosts


def host_data(host: dict, provider: dict) -> dict:
    return oauth_data(host, provider)


def pair_env(pair: list[dict], provider: dict, **more: str) -> dict[str, str]:
    return {
        "FLOWERBED_TEST_HOST_DATA": json.dumps({h["name"]: host_data(h, provider) for h in pair}),
        "FLOWERBED_TEST_ONLY_HOSTS": json.dumps([h["name"] for h in pair]),
        **more,
    }


def session_status(lab: Lab, host: dict, cookie: str) -> int:
    url = f"https://{host['fqdn']}/api/workers"
    status, _, _ = curl(lab, url, headers={"Cookie": f"user={cookie}"})
    return status


def key_of(master: str, host: dict) -> str:
    return host_cookie_secret(Secret("test", master), host["fqdn"]).value


def test_a_session_from_one_hosts_key_is_refused_by_the_other(lab: Lab, oidc: dict, pair):
    master = lab.secrets[oidc["cookie_secret_env"]]
    alice = oidc["users"]["allowed"]["email"]
    one, two = pair
    cookie = signed_cookie(key_of(master, one), "user", alice)
    assert session_status(lab, one, cookie) == 200, "its own host's key signs a valid session"
    assert session_status(lab, two, cookie) != 200, "another host's key is refused"
    forged = signed_cookie(master, "user", alice)
    assert all(session_status(lab, h, forged) != 200 for h in pair), "no host uses the master"
    env = lab.ssh(one["name"], "cat /etc/flower/flower.env", check=True).stdout
    assert master not in env, "the operator's secret never reaches a host"


def test_flowers_cookies_are_secure(lab: Lab, pair):
    _, headers, _ = curl(lab, f"https://{pair[0]['fqdn']}/login")
    cookie = headers.get("set-cookie", "")
    assert cookie.startswith("oauth_state="), headers
    assert re.search(r";\s*Secure", cookie, re.IGNORECASE), cookie
    assert re.search(r";\s*HttpOnly", cookie, re.IGNORECASE), cookie


def test_rotating_the_cookie_secret_ends_old_sessions_and_a_limit_leaves_the_other_host(
    lab: Lab,
    oidc: dict,
    pair,
    tmp_path: Path,
):
    variable = oidc["cookie_secret_env"]
    env_file = tmp_path / "lab.env"
    shutil.copy(lab.state["secrets_file"], env_file)
    env_file.chmod(0o600)
    old = lab.secrets[variable]
    alice = oidc["users"]["allowed"]["email"]
    one, two = pair
    names = [h["name"] for h in pair]
    try:
        limited = run_deploy(
            [one["name"]], {"rotate": "cookie"}, flags=("-y",), deploy_file="rotate.py",
            inventory=FLEET_INVENTORY, env=pair_env(pair, oidc, FLOWERBED_ENV_FILE=str(env_file)),
        )  # fmt: skip
        assert limited.ok, limited.explain()
        new = dotenv_values(env_file)[variable]
        assert new != old and dotenv_values(env_file)[f"{variable}_PREVIOUS"] == old
        assert re.search(rf"{two['name']}: NOT rotated \(outside --limit", limited.log)
        assert re.search(
            rf"\[{one['name']}\]\s+Flower is healthy on the new cookie secret", limited.log
        )
        assert session_status(lab, one, signed_cookie(key_of(old, one), "user", alice)) != 200
        assert session_status(lab, one, signed_cookie(key_of(new, one), "user", alice)) == 200
        assert session_status(lab, two, signed_cookie(key_of(old, two), "user", alice)) == 200
        assert_no_secret(limited, [old, new, key_of(old, one), key_of(new, one)])

        finished = run_deploy(
            names, {"rotate": "cookie"}, flags=("-y",), deploy_file="rotate.py",
            inventory=FLEET_INVENTORY, env=pair_env(pair, oidc, FLOWERBED_ENV_FILE=str(env_file)),
        )  # fmt: skip
        assert finished.ok, finished.explain()
        assert "Every host confirmed" in finished.log, finished.log
        assert f"{variable}_PREVIOUS" not in dotenv_values(env_file)
        assert session_status(lab, two, signed_cookie(key_of(old, two), "user", alice)) != 200
        assert session_status(lab, two, signed_cookie(key_of(new, two), "user", alice)) == 200
    finally:
        restored = run_deploy(names, inventory=FLEET_INVENTORY, env=pair_env(pair, oidc))
        assert restored.ok, restored.explain()
