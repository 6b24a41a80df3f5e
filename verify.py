"""Report every host's health, changing nothing.

    pyinfra inventory/prod.py verify.py -y

Per host: Flower answers on its socket and sees the broker's workers; nginx runs a
configuration that passes `nginx -t` and serves /healthcheck over HTTPS with a certificate
valid for 14 more days; flowerbed's firewall table is loaded and current. A host with a
problem is reported failed, with what is wrong (and Flower's journal when Flower is).
"""

from pyinfra import host, inventory

from flowerbed.preflight import checked
from flowerbed.verify import verify_host

this_host = checked(host, inventory)
verify_host(this_host.settings, this_host.edge.site)
