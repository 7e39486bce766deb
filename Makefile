# Everyday commands. `make lab` and `make test` are the two the README promises.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
PYTHON ?= python3

.PHONY: help venv tools image lab lab-down dev lint unit integration interop molecule lab-test test bench-db bench-failover bench-agenda bench-vip bench-redis bench-streams bench-gossip bench-crash caldav-conformance bench-caldav clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.stamp: requirements.txt app/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# The caldav library brings niquests, whose urllib3-future would otherwise take over the urllib3
	@# that requests (our HTTP clients) uses: built from source with this switch, it keeps to itself.
	URLLIB3_NO_OVERRIDE=1 $(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-build-isolation -e app
	touch $@

venv: $(VENV)/.stamp ## the controller's virtualenv (Ansible, Molecule, linters, the agenda package)

tools: ## Docker engine (started if needed), Vagrant, debootstrap
	lab/ensure-tools.sh

image: tools ## the lab's base image (rebuilt only when its recipe changes)
	lab/build-image.sh

lab: venv ## bring up the container lab with Vagrant and provision it with site.yml
	lab/up.sh

lab-down: ## remove the lab's machines, network and addresses
	lab/down.sh

dev: venv ## the whole stack on 127.0.0.1 as plain processes until Ctrl-C (DEV_ARGS="--port N --no-tls --fresh")
	python -m agenda.devstack $(DEV_ARGS)

lint: venv ## ruff, yamllint, ansible-lint (production profile)
	ruff check app tests lab inventories molecule bench
	yamllint --strict .
	ansible-lint --profile production

unit: venv ## unit tests: no network, no containers
	pytest -q tests/unit

integration: venv ## integration tests: real processes on loopback (five-node DB cluster)
	pytest -q tests/integration

interop: venv image ## agenda-vrrpd and Debian's keepalived on one VRID, both ways, in throwaway containers (VIPLAB_SUBNET)
	VIPLAB_BASE_IMAGE=$$(lab/build-image.sh) pytest -q tests/interop

molecule: venv image ## the Molecule scenarios (deploy, idempotence, verify)
	@# An interrupted run leaves Molecule's state saying the hosts exist; start from nothing.
	molecule destroy --all
	AGENDA_IMAGE=$$(lab/build-image.sh) molecule test --all

lab-test: venv tools ## the Vagrant lab from nothing: up, up again (changed=0), checks, down
	pytest -q tests/lab

test: lint unit integration interop molecule lab-test ## everything CI runs

caldav-conformance: venv ## caldav-server-tester against our dev stack and Radicale 3, both maps side by side
	python bench/caldav.py --conformance $(BENCH_ARGS)

bench-caldav: venv ## CalDAV PUT and one-day REPORT at 1/16/64 clients into 1,000 events, ours (TLS gateway) vs Radicale (apt-get install -y hey)
	python bench/caldav.py $(BENCH_ARGS)

bench-db: venv ## agenda-db vs etcd write and linearizable-read throughput and latency (apt-get install -y etcd-server etcd-client hey)
	python bench/db_vs_etcd.py $(BENCH_ARGS)

bench-failover: venv ## agenda-db vs etcd leader-failover write gap
	python bench/db_vs_etcd.py --failover $(BENCH_ARGS)

bench-agenda: venv ## create-event/list-agenda through the TLS gateway vs the DB's own writes (apt-get install -y hey)
	python bench/agenda_gateway.py $(BENCH_ARGS)

bench-vip: venv image ## VIP failover time, agenda-vrrpd vs keepalived at advert_int 1 and 0.1 s (BENCH_ARGS="--runs 5")
	VIPLAB_BASE_IMAGE=$$(lab/build-image.sh) python bench/vip.py $(BENCH_ARGS)

bench-redis: venv ## Redis failover time, agenda-redis-supervisor vs Redis Sentinel (apt-get install -y redis-server redis-sentinel)
	python bench/redis_failover.py $(BENCH_ARGS)

bench-streams: venv ## 1,000 notification streams on the gunicorn+gevent gateway: create-event p99, notification latency (apt-get install -y hey redis-server)
	python bench/notify_streams.py $(BENCH_ARGS)

bench-gossip: venv ## SWIM failure detection and false positives: simulated 5/50/500 members at 0 and 5% loss, then real agenda-gossip daemons on loopback, beside memberlist's formulas
	python bench/gossip_sim.py $(BENCH_ARGS)
	python bench/gossip_live.py

bench-crash: venv image ## a whole machine's crash in a 3-host Molecule lab: first write through a surviving gateway, 5 trials (BENCH_ARGS="--hosts 3 --trials 5")
	python bench/machine_crash.py $(BENCH_ARGS)

clean: lab-down ## remove the lab and the local caches (not the deployment CAs)
	rm -rf .cache
