# meshc: `make build` then `make test` on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MESHC  := $(VENV)/bin/meshc
OUT    ?= out
JOBS   ?= 2

.PHONY: build test unit integration image golden validate bench check fuzz clean

# The virtualenv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

## build: create the virtualenv, compile every case in policies/ into out/<case>/, validate it, and draw
## each case's mesh next to its output (out/<case>/mesh.mmd: Mermaid, rendered by GitHub and GitLab)
build: $(VENV)/.installed
	$(MESHC) build policies --cases -o $(OUT)
	$(MESHC) validate $(OUT)
	@for d in policies/*/; do name=$$(basename $$d); case $$name in _*) continue;; esac; \
	  $(MESHC) graph $$d -o $(OUT)/$$name/mesh.mmd || exit 1; done

## check: load and check every policy case, write nothing
check: $(VENV)/.installed
	@for d in policies/*/; do $(MESHC) check $$d || exit 1; done

## validate: schema + real-Envoy validation of out/
validate: $(VENV)/.installed
	$(MESHC) validate $(OUT)

## test: everything: unit, golden, validation and live-Envoy tests, then the Docker suite
test: unit integration

## unit: all tests but the Docker suite (they still run the real Envoy), on both cores
## (each test owns its loopback block and ports, so tests are independent)
unit: $(VENV)/.installed
	$(PY) -m pytest -n $(JOBS) --ignore=tests/integration

## image: build the Envoy image FROM scratch (no registry pull); prints its tag
image: $(VENV)/.installed
	docker/ensure-docker.sh
	docker/build-image.sh $(PY)

## integration: the Docker suite: starts dockerd if needed (and stops what it started)
integration: $(VENV)/.installed
	docker/ensure-docker.sh
	ENVOY_IMAGE=$${ENVOY_IMAGE:-$$(docker/build-image.sh $(PY))} $(PY) -m pytest tests/integration; \
	  rc=$$?; docker/stop-docker.sh; exit $$rc

## golden: regenerate golden/ from policies/ (review the diff like code)
golden: $(VENV)/.installed
	rm -rf golden
	$(MESHC) build policies --cases -o golden --dump-ir golden

## bench: build-speed benchmark on synthetic meshes (figures and ratios, not a test)
bench: $(VENV)/.installed
	$(PY) bench/bench.py

## fuzz: 10,000 damaged example policies and 1,000 generated meshes validated by the real Envoy (figures;
## exit 1 on any traceback, exit 3, unpositioned error or Envoy rejection). Bounded slice: tests/test_fuzz.py
fuzz: $(VENV)/.installed
	$(PY) tests/fuzz/run.py --jobs $(JOBS)

clean:
	rm -rf $(OUT) bench/.work .pytest_cache
