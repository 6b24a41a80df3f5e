"""flowerbed: Celery Flower as a hardened systemd service on every host of the inventory.

    pyinfra inventory/lab.py deploy.py            # preview: add --dry --diff
    pyinfra inventory/prod.py deploy.py -y

Every host's settings and secrets are validated before any host is touched. This repository
is a ready-to-run project around the package: the same one call a consumer's deploy makes.
"""

from flowerbed import deploy_flowerbed

deploy_flowerbed()
