"""Check every layer of every host, changing nothing, and print the fleet's health.

    pyinfra inventory/prod.py verify.py -y
    pyinfra inventory/prod.py verify.py -y \
        --data flower_verify_summary_file=/var/lib/flowerbed/verify.json

Per host, each layer is checked even when another fails: Flower's unit and its socket, nginx
(running, `nginx -t`), HTTPS from this machine with a login and the certificate's days left, the
firewall table, the unit's sandbox score; and through Flower's API: workers online and offline,
tasks failed in the last hour, tasks STARTED for too long, queue lengths, registered tasks.
Thresholds are the flower_verify_* knobs in group_data/all.py. The fleet's table goes to stdout (to
stderr with --json), a JSON summary to flower_verify_summary_file; the exit status is non-zero when
anything is wrong.
"""

from pyinfra import host, inventory

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
verify_host(this_host.settings, this_host.edge, checks)
