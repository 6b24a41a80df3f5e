"""Rotate a secret on every host of the inventory that uses it, with no downtime.

    pyinfra inventory/prod.py rotate.py -y                                  # every dashboard login
    pyinfra inventory/prod.py rotate.py -y --data rotate_users='["alice"]' \\
        --limit flower-1.example.com                                        # a canary first
    FLOWERBED_NEW_BROKER_URL=redis://:NEW@broker:6379/0 \\
        pyinfra inventory/prod.py rotate.py -y --data rotate=broker         # the broker password
    pyinfra inventory/prod.py rotate.py -y --data rotate=cookie             # OAuth cookie secret
    pyinfra inventory/prod.py rotate.py -y --data rotate_instance=billing   # an instance's logins

The new value goes into the env file the secret came from (.env or $FLOWERBED_ENV_FILE, locked
while it is written), with the old one kept as <VARIABLE>_PREVIOUS until every host of the
inventory that uses the variable confirmed the new one. With --limit, the hosts outside it are
named as NOT rotated and the old value stays; running rotate.py again (without --limit)
finishes a rotation that stopped half-way. See flowerbed/rotate.py.

The run is flowerbed.runs.rotate(), in the wheel: a project that installed only the
package runs it as `pyinfra inventory/prod.py flowerbed.runs.rotate -y`.
"""

from flowerbed.runs import rotate

rotate()
