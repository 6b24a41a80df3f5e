"""flowerbed: Celery Flower as a hardened systemd service on every host of the inventory.

    pyinfra inventory/lab.py deploy.py            # preview: add --dry --diff
    pyinfra inventory/prod.py deploy.py -y

Every host's settings and secrets are validated before any host is touched. This repository
is a ready-to-run project around the package: its run makes the same one call a consumer's
deploy makes, deploy_flowerbed().
The host that the dashboards name in flower_monitoring_host also gets the monitoring part
(Prometheus, the blackbox exporter, Alertmanager: docs/monitoring.md); one with
flower_monitoring_only = True gets only that.

The run is flowerbed.runs.deploy(), in the wheel: a project that installed only the
package runs it as `pyinfra inventory/prod.py flowerbed.runs.deploy` (a preview: add --dry --diff).
"""

from flowerbed.runs import deploy

deploy()
