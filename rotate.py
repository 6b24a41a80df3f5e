"""Rotate a secret on every host of the inventory that uses it, with no downtime.

    pyinfra inventory/prod.py rotate.py -y                                  # every dashboard login
    pyinfra inventory/prod.py rotate.py -y --data rotate_users='["alice"]' --limit web1   # canary
    FLOWERBED_NEW_BROKER_URL=redis://:NEW@broker:6379/0 \\
        pyinfra inventory/prod.py rotate.py -y --data rotate=broker         # the broker password
    pyinfra inventory/prod.py rotate.py -y --data rotate=cookie             # OAuth cookie secret

The new value goes into the env file the secret came from (.env or $FLOWERBED_ENV_FILE, locked
while it is written), with the old one kept as <VARIABLE>_PREVIOUS until every host of the
inventory that uses the variable confirmed the new one. With --limit, the hosts outside it are
named as NOT rotated and the old value stays; running rotate.py again (without --limit)
finishes a rotation that stopped half-way. See flowerbed/rotate.py.
"""

from pyinfra import host, inventory

from flowerbed.auth import HTPASSWD, htpasswd_file
from flowerbed.preflight import checked
from flowerbed.pyinfra_internals import install
from flowerbed.rotate import (
    broker_rolled,
    logins_confirmed,
    new_value_recorded,
    prepared_rotation,
    rotation_finished,
)
from flowerbed.settings import operator_checks
from flowerbed.verify import healthcheck_argv

install()  # flowerbed's shortcuts into pyinfra (flowerbed/pyinfra_internals.py)
rotation = prepared_rotation(host, inventory, checked)
this_host = checked(host, inventory)
settings = this_host.settings

new_value_recorded(
    name="Record the new value in the env file (the old one kept)", rotation=rotation
)
if rotation.kind == "logins":
    htpasswd_file(name="Dashboard logins (bcrypt)", path=HTPASSWD, logins=this_host.edge.logins)
    logins_confirmed(
        name="Over HTTPS: the new passwords get in, the old ones are refused",
        rotation=rotation,
        fqdn=this_host.edge.site.fqdn,
        base=this_host.edge.site.base,
        ca_bundle=operator_checks(host.data.dict()).ca_bundle,
    )
else:
    what = "broker URL" if rotation.kind == "broker" else "cookie secret"
    broker_rolled(
        name=f"Flower on the new {what}, one host at a time",
        settings=settings,
        flower_secrets=this_host.secrets,
        healthcheck=tuple(healthcheck_argv(settings)),
        what=what,
        _serial=True,
    )
rotation_finished(name="Rotation report", rotation=rotation)
