"""Several Flowers per host (flower_instances, flowerbed/instances.py): the data's grammar and
rules (every problem at once), the secrets (never quoted back), each instance's own names, the
site's locations and expensive-request budget, the record, rotate_instance and verify.py's
instance verdict (with its grace before a worker counts as offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from flowerbed import memory, verify
from flowerbed.flower import config_text
from flowerbed.inputs.edge import dashboard_site
from flowerbed.inputs.instances import instance_inputs, site_instances
from flowerbed.instances import instance_run, instance_unit_text, record_text
from flowerbed.nginx import https_site_text
from flowerbed.probe import OperatorChecks
from flowerbed.rotate import rotated_instance, variable_used
from flowerbed.settings import SettingsError, load_settings

BASE = {
    "flower_allowed_sources": ["10.0.0.0/8"],
    "flower_admin_sources": ["10.0.0.1/32"],
    "flower_fqdn": "f.example.com",
}


HEADERS_MORE_MODULE = "/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so"


def entry(name: str, path: str, **more) -> dict:
    upper = name.upper()
    return {"name": name, "broker_env": f"{upper}_BROKER", "path": path,
            "logins_env": f"{upper}_USERS", **more}  # fmt: skip


TWO = [entry("alpha", "alpha", max_tasks=500), entry("beta", "team/beta", app="proj:app")]


def settings_with(instances, **more):
    return load_settings({**BASE, "flower_instances": instances, **more})


def problems(instances, **more) -> str:
    with pytest.raises(SettingsError) as raised:
        settings_with(instances, **more)
    return str(raised.value)


def test_the_default_is_no_instance_and_nothing_of_them_in_the_site():
    settings = load_settings(BASE)
    assert settings.instances.instances == ()
    site = https_site_text(dashboard_site(settings, "h"), settings.dashboard_proxy)
    assert "instance" not in site and "flowerbed_flower_" not in site


def test_every_problem_of_every_entry_is_reported_at_once():
    text = problems(
        [
            {**entry("alpha", "api"), "name": "Alpha", "colour": "red"},
            {"name": "beta", "path": "x/../y", "broker_env": "postgres://u:secretpw@h/db"},
            entry("gamma", "g"),
            entry("gamma", "g/h"),
            "not a dict",
        ]
    )
    for expected in (
        "flower_instances['Alpha'].colour: unknown field",
        "flower_instances['Alpha'].name: 'Alpha' is not",
        "flower_instances['Alpha'].path: 'api' starts with one of Flower's own routes",
        "flower_instances['beta'].path",
        "flower_instances['beta'].broker_env: looks like a URL or a secret",
        "flower_instances['beta'].logins_env: missing",
        "flower_instances['gamma']: names an instance twice",
        "flower_instances['gamma'].path: 'g/h' is the same as or nested with",
        "flower_instances[4]: is not a dict",
    ):
        assert expected in text, text
    assert "secretpw" not in text


def test_rules_between_instances_and_the_main_flower():
    text = problems(
        [
            entry("alpha", "flower/a"),
            {**entry("beta", "b"), "logins_env": "FLOWERBED_DASHBOARD_USERS"},
        ],
        flower_url_prefix="flower",
    )
    assert (
        "flower_instances['alpha'].path: 'flower/a' is the same as or nested with flower_url_prefix"
        in text
    )
    assert (
        "flower_instances['beta'].logins_env: $FLOWERBED_DASHBOARD_USERS is also the main" in text
    )
    assert "flower_instances['beta'].app" not in text
    assert "flower_instances['beta'].app: an app needs flower_app_source" in problems(TWO)
    assert "served from flowerbed's own site only" in problems(
        [entry("alpha", "a")], flower_existing_site="/etc/nginx/sites-enabled/x"
    )


def test_instance_secrets_are_checked_all_at_once_and_never_quoted():
    settings = settings_with([entry("alpha", "a"), entry("beta", "b")])
    environ = {
        "ALPHA_BROKER": "http://u:brokersecret@h",
        "ALPHA_USERS": "ann:tiny9",
        "BETA_USERS": "bob:a-Long-enough-Passw0rd,bob:another-Long-Passw0rd",
    }
    with pytest.raises(SettingsError) as raised:
        instance_inputs(settings, environ)
    text = str(raised.value)
    assert "flower_instances['alpha'].broker_env" in text
    assert "flower_instances['alpha'].logins_env: the password of 'ann'" in text
    assert "flower_instances['beta'].broker_env: the environment variable BETA_BROKER" in text
    assert "flower_instances['beta'].logins_env: $BETA_USERS names a user twice" in text
    for secret in ("brokersecret", "tiny9", "a-Long-enough-Passw0rd"):
        assert secret not in text


def test_each_instance_has_names_of_its_own_and_the_main_venv():
    settings = settings_with([entry("alpha", "team/alpha", max_tasks=500)])
    mine = instance_run(settings.flower_run, settings.instances.instances[0])
    flower = mine.flower
    assert flower.unit_name == "flower-alpha.service"
    assert flower.socket == "/run/flower-alpha/flower-alpha.sock"
    assert flower.state_dir == "/var/lib/flower-alpha"
    assert flower.env_file == "/etc/flower/instances/alpha/flower-alpha.env"
    assert flower.venv == settings.flower.venv and flower.user == settings.flower.user
    config = config_text(flower, mine.options)
    assert "url_prefix = 'team/alpha'" in config and "max_tasks = 500" in config
    unit = instance_unit_text(mine, ("MemoryMax=1G",))
    assert "[Service]\nSyslogIdentifier=flower-alpha\nMemoryMax=1G\n" in unit
    assert "--conf=/etc/flower/instances/alpha/flowerconfig.py" in unit
    assert "EnvironmentFile=/etc/flower/instances/alpha/flower-alpha-proxy-login.env" in unit
    # its own memory ceiling, from its own max_tasks, and its own watchdog (flowerbed.memory)
    for line in memory.unit_lines(memory.ceiling("", 500)):
        assert f"\n{line}\n" in unit, line
    assert memory.watchdog_path(flower.config_dir) in config
    # its own socket kept across restarts (flowerbed.socket_keeper)
    assert f"'{flower.config_dir}/socket_keeper.py'" in config
    assert "path='/run/flower-alpha/flower-alpha.sock'" in config
    assert "FileDescriptorStoreMax=1\n" in unit


def test_the_site_serves_each_instance_with_its_own_logins_socket_and_budget():
    settings = settings_with(TWO, flower_app="proj:app", flower_app_source="proj==1.0")
    site = dashboard_site(settings, "h")
    assert [i.name for i in site.instances] == ["alpha", "beta"]
    text = https_site_text(site, settings.dashboard_proxy)
    assert (
        "upstream flowerbed_flower_beta {\n    server unix:/run/flower-beta/flower-beta.sock "
        in text
    )
    block = text[text.index("location /team/beta/ {") :].split("\n    }\n")[0]
    assert "auth_basic_user_file /etc/nginx/flowerbed-instance-beta.htpasswd;" in block
    assert "include /etc/flower/instances/beta/flower-beta-proxy-login.nginx.conf;" in block
    assert "proxy_pass http://flowerbed_flower_beta;" in block
    expensive = text[text.index("map $uri $flowerbed_expensive_path {") :].split("}")[0]
    for base in ("/", "/alpha/", "/team/beta/"):
        assert f"~^{base}(api/)?worker/ 1;" in expensive
        assert f"~^{base}api/task/apply/ 1;" in expensive
    patterns = re.findall(r"~(\S+) 1;", expensive)
    for uri in ("/team/beta/api/worker/x", "/team/beta/worker/x", "/alpha/api/task/apply/t"):
        assert any(re.match(p, uri) for p in patterns), uri
    assert not any(re.match(p, "/team/beta/api/tasks") for p in patterns)


def test_the_site_with_instances_passes_a_real_nginx_t(tmp_path):
    nginx = shutil.which("nginx")
    assert nginx, "nginx is missing: `make unit-packages` (never started)"
    settings = settings_with(TWO, flower_app="proj:app", flower_app_source="proj==1.0")
    text = https_site_text(dashboard_site(settings, "h"), settings.dashboard_proxy)
    for path in sorted(set(re.findall(r"(/etc/\S+?|/var/log/\S+?);", text))):
        local = tmp_path / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("")
        text = text.replace(path, str(local))
    key, cert = (tmp_path / "k.pem", tmp_path / "c.pem")
    openssl = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-subj", "/CN=f.example.com", "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    subprocess.run(openssl, check=True, capture_output=True)
    text = re.sub(r"ssl_certificate (\S+);", f"ssl_certificate {cert};", text)
    text = re.sub(r"ssl_certificate_key (\S+);", f"ssl_certificate_key {key};", text)
    (tmp_path / "site.conf").write_text(text.replace("listen 443", "listen 127.0.0.1:18443")
                                        .replace("listen [::]:443", "listen [::1]:18443")
                                        .replace("127.0.0.80:80", "127.0.0.80:18080"))  # fmt: skip
    (tmp_path / "nginx.conf").write_text(
        f"load_module {HEADERS_MORE_MODULE};\n"  # the decoy's rewrite (flowerbed.decoy)
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n include {tmp_path}/site.conf;\n}}\n"
    )
    argv = [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    checked = subprocess.run(argv, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_record_names_each_instance_once_sorted():
    assert record_text(["beta", "alpha", "beta"]) == "alpha\nbeta\n"
    assert record_text([]) == ""


def test_rotate_instance_names_that_instance_logins_variable():
    settings = settings_with([entry("alpha", "a"), entry("beta", "b")])
    assert (
        rotated_instance(settings, {"rotate_instance": "beta"}, "logins").logins_env == "BETA_USERS"
    )
    assert rotated_instance(settings, {}, "logins") is None
    with pytest.raises(SettingsError, match="'gamma' is not in flower_instances"):
        rotated_instance(settings, {"rotate_instance": "gamma"}, "logins")
    with pytest.raises(SettingsError, match="logins only"):
        rotated_instance(settings, {"rotate_instance": "beta"}, "broker")
    data = {"flower_instances": [entry("beta", "b")], "rotate_instance": "beta"}
    assert variable_used("logins", data) == "BETA_USERS"
    assert variable_used("logins", {**data, "rotate_instance": "alpha"}) == ""


@dataclass
class Answer:
    status: int
    body: dict
    error: str = ""

    def json(self) -> dict:
        return self.body


def checks(**more) -> OperatorChecks:
    defaults = dict(
        ca_bundle="", summary_file="", cert_min_days=14, exposure_max=3.0, min_workers_online=1,
        max_workers_offline=0, max_failed_tasks=0, max_task_seconds=600, max_queue_length=100,
        expected_tasks=(),
    )  # fmt: skip
    return OperatorChecks(**{**defaults, **more})


def test_a_worker_offline_at_first_is_asked_about_again_before_it_counts(monkeypatch):
    monkeypatch.setattr(verify, "WORKER_ASK_EVERY_S", 0.01)
    answers = iter([{"w@a": False}, {"w@a": False}, {"w@a": True}])
    asked = []

    def get(path):
        asked.append(path)
        return Answer(200, next(answers))

    assert verify.workers_answer(get, 0).json() == {"w@a": True}
    assert len(asked) == 3
    stuck = verify.workers_answer(lambda path: Answer(200, {"w@a": False}), 0, grace=0.05)
    assert stuck.json() == {"w@a": False}


def test_the_instance_verdict_names_what_failed():
    settings = settings_with([entry("beta", "b")])
    flower = instance_run(settings.flower_run, settings.instances.instances[0]).flower
    up = {"active": "active", "enabled": "enabled"}
    ok = verify.instance_verdict(flower, up, {"ok": True}, Answer(200, {"w@b": True}), 1, checks())
    assert ok.ok and ok.value == "1/0"
    stopped = verify.instance_verdict(
        flower, {"active": "inactive", "enabled": "enabled"}, {}, Answer(0, {}), 1, checks()
    )
    assert not stopped.ok and stopped.problem == "flower-beta.service is inactive, enabled"
    few = verify.instance_verdict(flower, up, {"ok": True}, Answer(200, {}), 1, checks())
    assert not few.ok and "0 worker(s) online, expected at least 1" in few.problem


def test_site_instances_follow_the_data_order():
    settings = settings_with(TWO, flower_app="proj:app", flower_app_source="proj==1.0")
    assert [(i.name, i.base) for i in site_instances(settings)] == [
        ("alpha", "/alpha/"),
        ("beta", "/team/beta/"),
    ]
    assert datetime.now(UTC)  # (the backups are dated in UTC: flowerbed.instances.backup_path)


def test_each_htpasswd_gives_the_other_flowers_names_the_decoys_hash():
    from flowerbed.auth import HTPASSWD
    from flowerbed.inputs.instances import InstanceInputs, htpasswd_path
    from flowerbed.inputs.logins import Login
    from flowerbed.instances import host_login_names, others_names

    settings = settings_with([entry("beta", "b"), entry("gamma", "g")])
    beta, gamma = settings.instances.instances

    def inputs(instance, *users):
        logins = tuple(Login(user, "x" * 16) for user in users)
        return InstanceInputs(instance=instance, broker_url=None, logins=logins)

    names = host_login_names(
        (Login("admin", "y" * 16),), (inputs(beta, "beta-ops"), inputs(gamma, "g1", "g2"))
    )
    assert others_names(names, HTPASSWD) == ("beta-ops", "g1", "g2")
    assert others_names(names, htpasswd_path("beta")) == ("admin", "g1", "g2")
    assert others_names(names, htpasswd_path("gamma")) == ("admin", "beta-ops")


def test_a_new_instance_whose_names_the_host_has_is_refused():
    from flowerbed.hostfiles import PathState
    from flowerbed.instances import instance_names, names_taken

    flower = settings_with([entry("alpha", "alpha")]).flower
    assert instance_names(flower, "exporter") == (
        "/etc/systemd/system/flower-exporter.service",
        "/run/systemd/system/flower-exporter.service",
        "/usr/local/lib/systemd/system/flower-exporter.service",
        "/usr/lib/systemd/system/flower-exporter.service",
        "/lib/systemd/system/flower-exporter.service",
        "/var/lib/flower-exporter",
        "/run/flower-exporter",
        "/etc/flower/instances/exporter",
    )
    hand_made = {
        "/etc/systemd/system/flower-exporter.service": PathState("f", 0o644, "root", "root", ""),
        "/var/lib/flower-exporter": PathState("d", 0o700, "prometheus", "prometheus", ""),
    }
    running = {"flower-exporter.service": {"running": True, "enabled": True}}
    [taken] = names_taken(flower, ["exporter", "alpha"], hand_made, running)
    assert taken == (
        "instance 'exporter': flower-exporter.service (running), "
        "/etc/systemd/system/flower-exporter.service, /var/lib/flower-exporter"
    )
    assert names_taken(flower, ["alpha"], {}, {}) == []
