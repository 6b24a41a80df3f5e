# flowerbed: `make demo` and `make test` are all a newcomer needs (Debian 12, as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOSTS ?= 3
# The lab hosts' Debian: trixie (13), bookworm (12), or mixed: `make test` then runs h1 and h3
# on trixie, h2 on bookworm and each test's fresh hosts alternating (tests/conftest.py); lab-up
# boots trixie.
DISTRO ?= mixed
LAB_DISTRO := $(if $(filter mixed,$(DISTRO)),trixie,$(DISTRO))
PYTEST_ARGS ?=

# What the lab and the tests need on this machine (the lab installs its own part too).
MACHINE_PACKAGES := make debootstrap systemd-container tinyproxy pebble redis-server openssl \
	curl openssh-client iproute2 gpg nftables bind9-dnsutils chromium shellcheck \
	prometheus prometheus-blackbox-exporter prometheus-alertmanager rabbitmq-server nodejs fail2ban nginx \
	libnginx-mod-http-headers-more-filter git python3-gdbm
# What the unit tests (`-m "not lab"`) run: git (the wheel is built from git's file list),
# nft (nft -c, as root), shellcheck, promtool (prometheus), the blackbox exporter and amtool,
# fail2ban-regex and nginx (run on a port of its own, as the test's user, never as a service)
# with the headers-more module (the decoy's rewrite), python3-gdbm (the takeover's state copy
# across dbm backends, on Debian's own python3). Each is in MACHINE_PACKAGES too (a test).
UNIT_PACKAGES := git nftables shellcheck prometheus prometheus-blackbox-exporter \
	prometheus-alertmanager fail2ban nginx libnginx-mod-http-headers-more-filter python3-gdbm

# Installs the Debian packages in $(1) that are missing: not installed ("ii"), which includes
# removed but not purged (dpkg -s answers 0 for those: their config files are still known).
define install_missing
	@missing=$$(for p in $(1); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null)" = "ii " ] || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

.PHONY: setup machine-packages unit-packages wheel docs lab-up lab-down lab-status demo test test-unit lint format bench bench-converge bench-fleet

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	@python3 -c "import ensurepip" 2>/dev/null || { apt-get update -q && apt-get install -y -q python3-venv; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --require-hashes --no-deps -r requirements.lock
	touch $@

# npm (the lab's OIDC provider is installed with it): Debian's package, unless the nodejs
# installed brings its own (NodeSource's provides npm and conflicts with Debian's).
machine-packages:
	$(call install_missing,$(MACHINE_PACKAGES))
	@command -v npm >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends npm; }

unit-packages:
	$(call install_missing,$(UNIT_PACKAGES))

lab-up: setup
	python3 lab/lab.py up --hosts $(HOSTS) --distro $(LAB_DISTRO)

lab-down:
	python3 lab/lab.py down

lab-status:
	python3 lab/lab.py status

demo: lab-up
	$(VENV)/bin/pyinfra -y inventory/lab.py deploy.py
	$(PY) lab/demo_info.py

# Without PYTEST_ARGS: tests/run_suite.py (unit tests, the lab's shards side by side, then what
# must run alone); with them, plain pytest, e.g. `make test PYTEST_ARGS=tests/lab/test_edge.py`.
test: setup machine-packages
	env -u DISTRO FLOWERBED_TEST_DISTRO=$(DISTRO) \
	  $(if $(PYTEST_ARGS),$(VENV)/bin/pytest $(PYTEST_ARGS),$(PY) tests/run_suite.py)

# The tests in tests/unit/: `-m "not lab"` still collects tests/lab/, so the layout check in
# tests/conftest.py sees every test.
test-unit: setup unit-packages
	$(VENV)/bin/pytest -m "not lab" $(PYTEST_ARGS)

# flowerbed's wheel in dist/, built the way the tests build it (tests/package_helpers.py).
wheel: setup
	$(PY) tests/package_helpers.py dist

# docs/configuration.md from the settings model and group_data/all.py (a test fails when stale).
docs: setup
	$(PY) docs/gen_config_reference.py

# Every script in benchmarks/ against the running lab, except lab_times.py (it tears the lab
# down: run it alone), fleet.py (30 hosts: `make bench-fleet`) and timed_runs.py (a module).
BENCHMARKS ?= $(filter-out benchmarks/lab_times.py benchmarks/fleet.py benchmarks/timed_runs.py,\
	$(wildcard benchmarks/*.py))
bench: setup lab-up
	@for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script || exit 1; done

# The no-op converge's cost on 10 fresh hosts of its own (issue 10; about 10 minutes).
bench-converge: setup lab-up
	$(PY) benchmarks/converge.py

# The fleet measured (issue 23): 10, 20 and 30 fresh hosts, per-host costs, a model of 100 and
# 1,000 hosts (about 35 minutes; FLEET_ARGS=--sizes=2,3 for a short trial). The lab raises
# fs.inotify.max_user_instances to 1024 for 30 hosts (Debian's 128 stops about the 26th).
FLEET_ARGS ?=
bench-fleet: setup lab-up
	$(PY) benchmarks/fleet.py $(FLEET_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
