"""Only the deploy's Flower health check (for lab tests of what a failing check prints)."""

from pyinfra import host

from flowerbed.pyinfra_internals import install
from flowerbed.settings import load_settings
from flowerbed.verify import verify_flower

install()  # as flowerbed's own deploys do
verify_flower(load_settings(host.data.dict()))
