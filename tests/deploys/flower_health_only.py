"""Only the deploy's Flower health check (for lab tests of what a failing check prints)."""

from pyinfra import host

from flowerbed.settings import load_settings
from flowerbed.verify import verify_flower

verify_flower(load_settings(host.data.dict()))
