"""Take flowerbed off every host of the inventory: the host as it was before flowerbed, apart
from the apt packages (kept by default) and Flower's state (kept in a dated backup by default).

    pyinfra inventory/prod.py remove.py --dry        # what would go, host by host
    pyinfra inventory/prod.py remove.py -y
    pyinfra inventory/prod.py remove.py -y --data flower_remove_keep_state=False \\
        --data flower_remove_packages=True --data flower_remove_revoke_certificate=True

Needs the inventory's data (its settings are validated) but no secret. Each host ends with one
line saying what was kept where; a host flowerbed never touched is told so and left alone. See
flowerbed/remove.py for what goes, in which order.

The run is flowerbed.runs.remove(), in the wheel: a project that installed only the
package runs it as `pyinfra inventory/prod.py flowerbed.runs.remove --dry`.
"""

from flowerbed.runs import remove

remove()
