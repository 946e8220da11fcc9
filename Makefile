# Everything a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
XEN_CACHE ?= $(CURDIR)/.cache/xen
export KEXEC_LU_XEN_CACHE = $(XEN_CACHE)

.PHONY: all install install-test fetch-xen tools test bench soak fuzz demo clean

all: install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel cffi

# Reinstall whenever a source of the package changes (the C core is compiled here).
$(VENV)/.installed: $(BIN)/python setup.cfg setup.py pyproject.toml $(wildcard csrc/*) $(wildcard kexec_lu/*.py) $(wildcard hyperv_sim/*.py hyperv_sim/*/*.py)
	# compat: a plain path entry, not an import hook, so every hypervisor
	# start (each live update execs one) skips the hook's cost.
	$(BIN)/python -m pip install -q -e . --config-settings editable_mode=compat
	# Byte-compile now: with PYTHONDONTWRITEBYTECODE set, every hypervisor
	# start would otherwise compile its sources inside the blackout.
	$(BIN)/python -m compileall -q kexec_lu hyperv_sim >/dev/null
	touch $@

install: $(VENV)/.installed

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

install-test: $(VENV)/.installed-test

fetch-xen:
	bash tools/fetch-xen-artifacts.sh "$(XEN_CACHE)"

tools:
	bash tools/ensure-tools.sh

test: install-test fetch-xen tools
	$(BIN)/python -m pytest -q
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/shell/run.sh

# Benchmarks (not tests): BENCH_HOSTS picks host sizes from floor,S,M,L,XL.
# Writes bench/results/latest.{md,json,png}; see README "Performance".
BENCH_HOSTS ?= floor,S,L,XL
bench: install
	$(BIN)/python -m pip install -q 'matplotlib>=3.5'   # the plot; the rest needs nothing more
	$(BIN)/python -m bench --hosts $(BENCH_HOSTS)

# The long soak: 200 live updates, verify after each (see README for numbers).
soak: install
	$(BIN)/python -m bench.soak --updates 200

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

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tools/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info kexec_lu/*.so hyperv_sim/*.so kexec_lu/_xen_abi.c hyperv_sim/_lu_core.c
