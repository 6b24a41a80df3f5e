"""flowerbed: Celery Flower as a hardened systemd service on every host of the inventory.

    pyinfra inventory/lab.py deploy.py            # preview: add --dry --diff
    pyinfra inventory/prod.py deploy.py -y

Every host's settings and secrets are validated before any host is touched.
"""

from pyinfra import host, inventory

from flowerbed.edge import edge
from flowerbed.firewall import inbound_firewall
from flowerbed.flower import flower_service, install_flower, remove_old_venvs
from flowerbed.packages import package_sources
from flowerbed.preflight import checked
from flowerbed.verify import verify_flower

this_host = checked(host, inventory)
settings = this_host.settings

package_sources(settings.egress)
inbound_firewall(settings.firewall)
installed = install_flower(settings)
flower_service(settings, this_host.secrets, installed)
edge(settings, this_host.edge)
verify_flower(settings)
remove_old_venvs(settings.flower, installed)
