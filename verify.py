"""Check every layer of every host, changing nothing, and print the fleet's health.

    pyinfra inventory/prod.py verify.py -y
    pyinfra inventory/prod.py verify.py -y \
        --data flower_verify_summary_file=/var/lib/flowerbed/verify.json

Per host, each layer is checked even when another fails: Flower's unit and its socket, nginx
(running, `nginx -t`), HTTPS from this machine with a login and the certificate's days left, the
firewall table, the unit's sandbox score; and through Flower's API: workers online and offline,
tasks failed in the last hour, tasks STARTED for too long, queue lengths, registered tasks.
On the monitoring host (flower_monitoring_host): every Prometheus target up, flowerbed's rules
loaded, and no failed Alertmanager delivery in the last 15 minutes.
Thresholds are the flower_verify_* knobs in group_data/all.py. The fleet's table goes to stdout (to
stderr with --json), a JSON summary to flower_verify_summary_file; the exit status is non-zero when
anything is wrong.
"""

from pyinfra import host, inventory

from flowerbed.monitoring import is_monitoring_host, runs_dashboard
from flowerbed.monitoring_verify import monitoring_checked
from flowerbed.preflight import InvalidDeploy, checked
from flowerbed.pyinfra_internals import install
from flowerbed.settings import SettingsError, operator_checks
from flowerbed.verify import verify_host

install()  # flowerbed's shortcuts into pyinfra (flowerbed/pyinfra_internals.py)
this_host = checked(host, inventory)
try:
    checks = operator_checks(host.data.dict())
except SettingsError as error:
    raise InvalidDeploy(f"host {host.name}: {error}") from error
if is_monitoring_host(host, inventory):  # Prometheus' targets and rules, Alertmanager's deliveries
    monitoring_checked(name="Monitoring: every target up, rules loaded, deliveries")
verify_host(this_host.settings, this_host.edge, checks, dashboard=runs_dashboard(host.data.dict()))
