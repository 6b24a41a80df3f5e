"""Only the deploy's Flower health check (for lab tests of what a failing check prints)."""

from pyinfra import host

from flowerbed.healthcheck import verify_flower
from flowerbed.pyinfra_internals import install
from flowerbed.settings import load_settings

install()  # as flowerbed's own deploys do
verify_flower(load_settings(host.data.dict()).flower_run)
