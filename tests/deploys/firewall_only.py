"""Only the firewall (for its lab tests: no Flower install, so a run takes seconds)."""

from pyinfra import host

from flowerbed.firewall import inbound_firewall
from flowerbed.pyinfra_internals import install
from flowerbed.settings import load_settings

install()  # as flowerbed's own deploys do
inbound_firewall(load_settings(host.data.dict()).firewall)
