"""The monitoring part's files, rendered and checked by the tools that will read them
(promtool, amtool, the blackbox exporter's --config.check: Debian's prometheus,
prometheus-alertmanager and prometheus-blackbox-exporter, in the Makefile's UNIT_PACKAGES: a
missing tool is a failure, never a skip); its settings; and who watches whom."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from flowerbed import monitoring as mon
from flowerbed.settings import SettingsError, load_settings, validate
from flowerbed.settings.monitoring import join_monitoring_source

BASE = {"flower_allowed_sources": ["10.0.0.0/8"], "flower_admin_sources": ["10.0.0.1/32"]}
MAIL = {
    "flower_monitoring_smtp_smarthost": "10.77.0.1:2525",
    "flower_monitoring_smtp_from": "alerts@flowerbed.test",
    "flower_monitoring_mail_to": ["ops@flowerbed.test", "oncall@flowerbed.test"],
    "flower_monitoring_smtp_user": "alerts",
    "flower_monitoring_smtp_password_env": "FLOWERBED_SMTP_PASSWORD",
}
TARGETS = [mon.Target("h1", "h1.flowerbed.test"), mon.Target("h2", "h2.example.com", "/flower/")]


def tool(name: str, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which(name)
    assert binary, f"{name} is missing: `make unit-packages` installs it"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def settings(**data):
    return load_settings({**BASE, **MAIL, **data}).monitoring


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path):
    m = settings(flower_monitoring_rules={"workers_missing_for": "10s"})
    rules = tmp_path / "rules.yml"
    rules.write_text(mon.rules_text(m))
    config = tmp_path / "prometheus.yml"
    config.write_text(mon.prometheus_text(m, TARGETS).replace(mon.RULES_FILE, str(rules)))
    checked = tool("promtool", "check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "for: 10s" in rules.read_text()
    text = config.read_text()
    for target in TARGETS:
        assert f'"{target.probe_url}"' in text and f'"{target.base}metrics"' in text
    assert "127.0.0.1:9093" in text  # its Alertmanager, on loopback


def test_a_bad_rule_file_is_refused_by_the_check_the_deploy_runs(tmp_path: Path):
    bad = tmp_path / "bad.yml"
    bad.write_text("groups: [{name: x, rules: [{alert: A, expr: 'up =='}]}]\n")
    assert tool("promtool", "check", "rules", str(bad)).returncode != 0


def test_alertmanager_config_passes_amtool(tmp_path: Path):
    template = tmp_path / "flowerbed.tmpl"
    template.write_text(mon.mail_template_text(TARGETS, "mon1"))
    for m in (settings(), settings(flower_monitoring_webhook_url="https://hook.example.com/a")):
        config = tmp_path / "alertmanager.yml"
        config.write_text(mon.alertmanager_text(m).replace(mon.MAIL_TEMPLATE, str(template)))
        checked = tool("amtool", "check-config", str(config))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        text = config.read_text()
        assert "smtp_require_tls: true" in text and "send_resolved: true" in text
        assert mon.SMTP_PASSWORD_FILE in text and "smtp_auth_password:" not in text
    template_text = template.read_text()
    assert '"h2.example.com" }}https://h2.example.com/flower/' in template_text


def test_blackbox_config_passes_its_check(tmp_path: Path):
    config = tmp_path / "blackbox.yml"
    config.write_text(mon.blackbox_text(settings(flower_monitoring_ca_bundle="")))
    checked = tool("prometheus-blackbox-exporter", "--config.check", f"--config.file={config}")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_services_listen_on_loopback_only_in_a_sandbox():
    for service in mon.services(settings()).values():
        text = mon.dropin_text(service)
        listen = [a for a in service.exec_start if "listen-address" in a]
        assert listen and all(a.endswith("=") or "=127.0.0.1:" in a for a in listen), listen
        for line in ("ExecStart=\n", "ProtectSystem=strict", "NoNewPrivileges=yes"):
            assert line in text
    assert "--cluster.listen-address=" in mon.services(settings())["alertmanager"].exec_start


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"flower_monitoring_mail_to": []}, "flower_monitoring_mail_to"),
        ({"flower_monitoring_smtp_password_env": ""}, "flower_monitoring_smtp_password_env"),
        ({"flower_monitoring_rules": {"workers_missing_for": "soon"}}, "flower_monitoring_rules"),
        ({"flower_monitoring_group_wait": "30"}, "flower_monitoring_group_wait"),
        (
            {"flower_monitoring_smtp_smarthost": "smtp.example.com"},
            "flower_monitoring_smtp_smarthost",
        ),
        (
            {"flower_monitoring_webhook_url": "https://u:p@hook.example.com/"},
            "flower_monitoring_webhook_url",
        ),
    ],
)
def test_bad_monitoring_settings_name_their_key(data, key):
    _, problems = validate({**BASE, **MAIL, **data})
    assert key in [error.key for error in problems.errors]


def test_default_off():
    m = load_settings(BASE).monitoring
    assert (m.host, m.smtp_smarthost, m.webhook_url, m.only) == ("", "", "", False)
    assert join_monitoring_source(BASE, lambda name: None) == BASE


def test_the_monitoring_hosts_address_joins_the_dashboards_sources():
    watcher = {"ssh_hostname": "10.77.0.42"}
    data = {**BASE, "flower_monitoring_host": "mon", "flower_monitoring_sources": ["192.0.2.0/24"]}
    joined = join_monitoring_source(data, {"mon": watcher}.get)
    assert joined["flower_monitoring_sources"] == ["192.0.2.0/24", "10.77.0.42/32"]
    assert load_settings(joined).firewall.monitoring_sources[-1] == "10.77.0.42/32"
    # already covered: nothing is added; an address set explicitly wins over ssh_hostname
    covered = {**data, "flower_monitoring_sources": ["10.77.0.0/24"]}
    assert join_monitoring_source(covered, {"mon": watcher}.get) == covered
    explicit = {"ssh_hostname": "mon.example.com", "flower_monitoring_address": "2001:db8::7"}
    joined = join_monitoring_source(data, {"mon": explicit}.get)
    assert joined["flower_monitoring_sources"][-1] == "2001:db8::7/128"


@pytest.mark.parametrize(
    ("hosts", "problem"),
    [
        ({}, "is not a host of the inventory"),
        ({"mon": {"ssh_hostname": "mon.example"}}, "not an IP"),
    ],
)
def test_an_unresolvable_monitoring_host_is_an_error(hosts, problem):
    with pytest.raises(SettingsError, match=problem):
        join_monitoring_source({**BASE, "flower_monitoring_host": "mon"}, hosts.get)


def fake_inventory(hosts: dict[str, dict]):
    def host(name, data):
        return SimpleNamespace(
            name=name, data=SimpleNamespace(dict=lambda: data, get=lambda k, d=None: data.get(k, d))
        )

    return [host(name, data) for name, data in hosts.items()]


def test_who_watches_whom():
    inventory = fake_inventory(
        {
            "h1": {"flower_monitoring_host": "mon", "flower_fqdn": "flower.example.com"},
            "h2": {"flower_monitoring_host": "mon", "flower_url_prefix": "flower"},
            "h3": {},
            "mon": {"flower_monitoring_host": "mon", "flower_monitoring_only": True},
        }
    )
    assert mon.monitored_by("mon", inventory) == [
        mon.Target("h1", "flower.example.com", "/"),
        mon.Target("h2", "h2", "/flower/"),
    ]
    assert [h.name for h in inventory if mon.is_monitoring_host(h, inventory)] == ["mon"]
    assert not mon.runs_dashboard(inventory[3].data.dict())


def test_verify_layers_of_the_monitoring_host():
    from flowerbed.monitoring_verify import monitoring_verdicts

    def vector(value):
        return {"data": {"result": [{"value": [0, str(value)]}]}}

    up = {"health": "up", "labels": {"job": "flower", "instance": "h1"}}
    down = {"health": "down", "labels": {"job": "flower", "instance": "h2"}}
    groups = {"data": {"groups": [{"name": "flowerbed-celery", "rules": [{"health": "ok"}]},
                                  {"name": "flowerbed-flower", "rules": []}]}}  # fmt: skip
    fine = monitoring_verdicts([{"data": {"activeTargets": [up]}}, groups, vector(0), vector(2)])
    assert {name: v[0] for name, v in fine.items()} == dict.fromkeys(fine, True)
    bad = monitoring_verdicts([{"data": {"activeTargets": [up, down]}}, {}, vector(3), vector(3)])
    assert not any(v[0] for v in bad.values())
    assert "flower/h2" in bad["targets"][2] and "failed 3 of 3" in bad["delivery"][2]
    assert not any(v[0] for v in monitoring_verdicts([]).values())  # Prometheus not answering
