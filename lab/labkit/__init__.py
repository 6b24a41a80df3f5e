"""flowerbed's lab: throw-away Debian hosts with real systemd, on this machine.

Each host boots systemd as PID 1 under systemd-nspawn, on an overlay over a cached
read-only base image, with its own address on a private bridge and sshd with a key the
lab generates. Around the hosts the lab runs, on the bridge address:

  tinyproxy             the only way out for hosts (apt, PyPI); IP forwarding stays off
  pebble                a local ACME CA (HTTP-01 and DNS-01), like Let's Encrypt
  pebble-challtestsrv   the lab's DNS: hN.flowerbed.test and ACME TXT records
  redis-server          a real Celery broker, with a password
  celery worker         the demo app (lab/demo_app), plus a producer sending it tasks

and two client network namespaces, lab-allowed and lab-denied, inside and outside the
allowed sources that inventory/lab.py configures.

One module per concern:

  config     paths (.lab, the image cache), addresses, ports, base image packages
  process    commands, and the lab's processes tracked by PID files in .lab/run
  image      the machine's packages and the cached base images
  network    the bridge, the client namespaces, /etc/hosts
  services   tinyproxy, DNS, pebble
  celery_lab Redis, the demo worker and producer, each ensured to answer (not just to run)
  hosts      booting, reaching and removing hosts
  state      .lab/state.json, .lab/lab.env and the lab's lock
  handover   one lab per machine: stopping what a lab in another checkout left running
  cli        the commands (lab/lab.py is their entry point)

State for tools and tests: .lab/state.json (and .lab/lab.env, the lab's secrets, 0600).
Runs as root. Base images are cached in /var/cache/flowerbed-lab (FLOWERBED_LAB_CACHE).
"""
