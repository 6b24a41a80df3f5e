"""Only the firewall (for its lab tests: no Flower install, so a run takes seconds)."""

from pyinfra import host

from flowerbed.firewall import inbound_firewall
from flowerbed.settings import load_settings

inbound_firewall(load_settings(host.data.dict()).firewall)
