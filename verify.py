"""Check every layer of every host, changing nothing, and print the fleet's health.

    pyinfra inventory/prod.py verify.py -y
    pyinfra inventory/prod.py verify.py -y \\
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

The run is flowerbed.runs.verify(), in the wheel: a project that installed only the
package runs it as `pyinfra inventory/prod.py flowerbed.runs.verify -y`.
"""

from flowerbed.runs import verify

verify()
