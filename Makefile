# flowerbed: `make demo` and `make test` are all a newcomer needs (Debian 12, as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOSTS ?= 3
# The lab hosts' Debian: trixie (13), bookworm (12), or mixed: `make test` then runs h1 and h3
# on trixie, h2 on bookworm and fresh hosts alternating (tests/conftest.py); lab-up boots trixie.
DISTRO ?= mixed
LAB_DISTRO := $(if $(filter mixed,$(DISTRO)),trixie,$(DISTRO))
PYTEST_ARGS ?=

# What the lab and the tests need on this machine (the lab installs its own part too).
MACHINE_PACKAGES := make debootstrap systemd-container tinyproxy pebble redis-server openssl \
	curl openssh-client iproute2 gpg nftables bind9-dnsutils chromium shellcheck \
	prometheus prometheus-blackbox-exporter rabbitmq-server nodejs

.PHONY: setup machine-packages lab-up lab-down lab-status demo test test-unit lint format bench bench-converge

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	@python3 -c "import ensurepip" 2>/dev/null || { apt-get update -q && apt-get install -y -q python3-venv; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --require-hashes --no-deps -r requirements.lock
	touch $@

machine-packages:
	@missing=$$(for p in $(MACHINE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -q --no-install-recommends $$missing; \
	fi

lab-up: setup
	python3 lab/lab.py up --hosts $(HOSTS) --distro $(LAB_DISTRO)

lab-down:
	python3 lab/lab.py down

lab-status:
	python3 lab/lab.py status

demo: lab-up
	$(VENV)/bin/pyinfra -y inventory/lab.py deploy.py
	$(PY) lab/demo_info.py

test: setup machine-packages
	env -u DISTRO FLOWERBED_TEST_DISTRO=$(DISTRO) $(VENV)/bin/pytest $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/pytest -m "not lab" $(PYTEST_ARGS)

# Every script in benchmarks/ against the running lab, except lab_times.py (it tears the lab
# down: run it alone).
BENCHMARKS ?= $(filter-out benchmarks/lab_times.py,$(wildcard benchmarks/*.py))
bench: setup lab-up
	@for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script || exit 1; done

# The no-op converge's cost on 10 fresh hosts of its own (issue 10; about 10 minutes).
bench-converge: setup lab-up
	$(PY) benchmarks/converge.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
