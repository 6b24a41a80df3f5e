"""The operator's runs, in the package: the repository's deploy.py, verify.py, rotate.py and
remove.py each call one of these, and a project that installed the wheel runs them by name
(pyinfra's CLI takes a `module.function` in place of a deploy file and calls it per host):

    pyinfra inventory/prod.py flowerbed.runs.deploy --dry --diff
    pyinfra inventory/prod.py flowerbed.runs.verify -y
    pyinfra inventory/prod.py flowerbed.runs.rotate -y --data rotate=cookie
    pyinfra inventory/prod.py flowerbed.runs.remove --dry

Each takes its data (`--data`, the inventory, group_data/) and secrets (.env or
$FLOWERBED_ENV_FILE, from where pyinfra runs) as the repository's files do; the repository's
file of the same name documents each run.
"""

from pyinfra import host, inventory

from .auth import HTPASSWD, htpasswd_file
from .deploy import deploy_flowerbed
from .healthcheck import healthcheck_argv
from .inputs.instances import htpasswd_path
from .instances import host_login_names, others_names
from .monitoring import deploy_monitoring, is_monitoring_host, runs_dashboard
from .monitoring_verify import monitoring_checked
from .preflight import InvalidDeploy, checked, explicit_keys
from .pyinfra_internals import install
from .remove import remove_flowerbed
from .rotate import (
    broker_rolled,
    logins_confirmed,
    new_value_recorded,
    prepared_rotation,
    rotation_finished,
)
from .settings import SettingsError, operator_checks, validate
from .verify import verify_host


def deploy() -> None:
    """Flowerbed on a host the dashboards run on; the monitoring part on the host they name in
    flower_monitoring_host (on its own with flower_monitoring_only = True)."""
    if runs_dashboard(host.data.dict()):
        deploy_flowerbed()
    if is_monitoring_host(host, inventory):
        deploy_monitoring()


def verify() -> None:
    """Every layer of this host checked, nothing changed; the fleet's table once every host is
    checked (flowerbed.verify)."""
    install()  # flowerbed's shortcuts into pyinfra (flowerbed/pyinfra_internals.py)
    this_host = checked(host, inventory)
    try:
        checks = operator_checks(host.data.dict())
    except SettingsError as error:
        raise InvalidDeploy(f"host {host.name}: {error}") from error
    if is_monitoring_host(host, inventory):  # Prometheus' targets and rules, Alertmanager's
        monitoring_checked(name="Monitoring: every target up, rules loaded, deliveries")
    verify_host(
        this_host.settings,
        this_host.edge,
        checks,
        dashboard=runs_dashboard(host.data.dict()),
        instances=this_host.instances,
    )


def rotate() -> None:
    """One secret rotated on every host that uses it (`--data rotate=logins|broker|cookie`),
    the env file keeping the old value until each confirmed (flowerbed.rotate)."""
    install()  # flowerbed's shortcuts into pyinfra (flowerbed/pyinfra_internals.py)
    rotation = prepared_rotation(host, inventory, checked)
    this_host = checked(host, inventory)
    settings = this_host.settings

    new_value_recorded(
        name="Record the new value in the env file (the old one kept)", rotation=rotation
    )
    if rotation.kind == "logins":
        path, logins, base = rotated_logins(this_host, rotation.instance)
        others = others_names(host_login_names(this_host.edge.logins, this_host.instances), path)
        htpasswd_file(name="Dashboard logins (bcrypt)", path=path, logins=logins, others=others)
        logins_confirmed(
            name="Over HTTPS: the new passwords get in, the old ones are refused",
            rotation=rotation,
            fqdn=this_host.edge.site.fqdn,
            base=base,
            ca_bundle=operator_checks(host.data.dict()).ca_bundle,
        )
    else:
        what = "broker URL" if rotation.kind == "broker" else "cookie secret"
        broker_rolled(
            name=f"Flower on the new {what}, one host at a time",
            settings=settings,
            flower_secrets=this_host.secrets,
            healthcheck=tuple(healthcheck_argv(settings.flower_run)),
            what=what,
            _serial=True,
        )
    rotation_finished(name="Rotation report", rotation=rotation)


def rotated_logins(this_host, instance: str) -> tuple[str, tuple, str]:
    """(htpasswd, logins, base) of the main dashboard, or of the instance named."""
    if not instance:
        return HTPASSWD, this_host.edge.logins, this_host.edge.site.base
    one = next(i for i in this_host.instances if i.instance.name == instance)
    return htpasswd_path(instance), one.logins, one.instance.base


def remove() -> None:
    """Flowerbed taken off this host, its settings validated first, no secret needed
    (flowerbed.remove)."""
    settings, problems = validate(host.data.dict(), explicit_keys(host))
    if problems.errors:
        raise InvalidDeploy(
            f"host {host.name}: " + "; ".join(str(error) for error in problems.errors)
        )
    remove_flowerbed(settings.flower, settings.remove)
