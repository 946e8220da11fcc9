# Everything a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
XEN_CACHE ?= $(CURDIR)/.cache/xen
export KEXEC_LU_XEN_CACHE = $(XEN_CACHE)

.PHONY: all install develop install-test fetch-xen tools test bench soak fuzz mutate demo completion clean

all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel cffi

# A regular install into the venv: what `make demo`, `make test` and the
# benchmarks run.  pip byte-compiles it, and every hypervisor start (each
# live update execs one) imports it from site-packages with no import hook.
# Reinstalled whenever a source changes (the C core is compiled here); build/
# goes first so a module deleted from src/ does not survive in it.
SOURCES = setup.cfg setup.py pyproject.toml $(wildcard csrc/*) $(shell find src -name '*.py') $(wildcard completion/*/*)
$(VENV)/.installed: $(BIN)/python $(SOURCES)
	rm -rf build
	$(BIN)/python -m pip install -q --no-build-isolation .
	touch $@

install: $(VENV)/.installed

# Developing: an editable install, so edits under src/ run without a
# reinstall.  Not for measuring: `make install` (or make test/demo/bench)
# replaces it with the regular install again.
develop: $(BIN)/python
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test]'
	rm -f $(VENV)/.installed

# Test-only dependencies (setup.cfg's `test` extra), installed with the package.
$(VENV)/.installed-test: $(BIN)/python setup.cfg
	$(BIN)/python -m pip install -q --no-build-isolation '.[test]'
	touch $@

install-test: $(VENV)/.installed-test

# The static shell-completion scripts in completion/, from the installed
# programs' options (a test fails when they are out of date).
completion: install
	$(BIN)/python tools/gen_completion.py
	$(MAKE) install

fetch-xen:
	bash tools/fetch-xen-artifacts.sh "$(XEN_CACHE)"

tools:
	bash tools/ensure-tools.sh

test: install-test install fetch-xen tools
	$(BIN)/python -m pytest -q
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/shell/run.sh

# Benchmarks (not tests): BENCH_HOSTS picks hosts (bench/hosts.py; default: all
# but M: floor, S, L, XL, XXL and the RAM and domain series).
# Writes bench/results/latest.{md,json,png}; see README "Performance".
BENCH_HOSTS ?= floor,S,L,XL,XXL,L-256G,L-1T,L-16d,L-256d,L-1024d
bench: install
	$(BIN)/python -m pip install -q 'matplotlib>=3.5'   # the plot; the rest needs nothing more
	$(BIN)/python -m bench --hosts $(BENCH_HOSTS)

# The long soak: 200 live updates, verify after each, xen#2 killed at random
# in about one in ten and recovered (see README for numbers).
soak: install
	$(BIN)/python -m bench.soak --updates 200 --kill-one-in 10

# Coverage-guided fuzzing (not a test; `make test` runs the short versions):
# the image parser with atheris, the stream framing with libFuzzer (clang),
# FUZZ_SECONDS each.  Seeds, corpora, binaries and crashing inputs go to
# fuzz/out/.  Fails if either fuzzer found a crash.
FUZZ_SECONDS ?= 300
fuzz: install-test fetch-xen
	bash tools/ensure-fuzz-tools.sh
	$(BIN)/python -m pip install -q atheris || echo "fuzz: atheris did not install; the image fuzzer falls back to hypothesis"
	rc=0; \
	$(BIN)/python fuzz/fuzz_image.py --seconds $(FUZZ_SECONDS) || rc=1; \
	$(BIN)/python fuzz/fuzz_stream.py --seconds $(FUZZ_SECONDS) || rc=1; \
	exit $$rc

# Mutation testing (not a test: it takes an hour and more): cosmic-ray over
# the modules that decide correctness, each mutant against that module's
# tests, in a venv of its own (.mutate/).  MUTATE_MODULES=window,abi for a
# subset.  Writes mutate/results/latest.{md,json}; see README "Mutation testing".
MUTATE_MODULES ?=
mutate: install-test fetch-xen tools
	$(BIN)/python tools/mutate.py $(if $(MUTATE_MODULES),--modules $(MUTATE_MODULES))

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/demo.sh

clean:
	rm -rf $(VENV) .mutate build src/*.egg-info src/*/*.so src/xen_public/_xen_abi.c src/hyperv_sim/_lu_core.c
