"""flowerbed: Celery Flower as a hardened systemd service on every host of the inventory.

    pyinfra inventory/lab.py deploy.py            # preview: add --dry --diff
    pyinfra inventory/prod.py deploy.py -y

Every host's settings and secrets are validated before any host is touched. This repository
is a ready-to-run project around the package: the same one call a consumer's deploy makes.
The host that the dashboards name in flower_monitoring_host also gets the monitoring part
(Prometheus, the blackbox exporter, Alertmanager: docs/monitoring.md); one with
flower_monitoring_only = True gets only that.
"""

from pyinfra import host, inventory

from flowerbed import deploy_flowerbed
from flowerbed.monitoring import deploy_monitoring, is_monitoring_host, runs_dashboard

if runs_dashboard(host.data.dict()):
    deploy_flowerbed()
if is_monitoring_host(host, inventory):
    deploy_monitoring()
