#!/usr/bin/env bash
# What `make fuzz` needs beyond `make test`'s tools: clang with its libFuzzer
# and sanitizer runtimes (fuzz/fuzz_stream.py).  Installed from Debian's
# archive when missing; atheris comes from PyPI (the Makefile installs it).
set -euo pipefail
probe() {
    local cc tmp
    for cc in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
        command -v "$cc" >/dev/null || continue
        tmp=$(mktemp -d)
        printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$tmp/t.c"
        if "$cc" -fsanitize=fuzzer,address,undefined "$tmp/t.c" -o "$tmp/t" 2>/dev/null; then
            rm -rf "$tmp"
            return 0
        fi
        rm -rf "$tmp"
    done
    return 1
}
probe && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "ensure-fuzz-tools: please install clang (with libFuzzer; needs root)" >&2
    exit 1
fi
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang >/dev/null
probe || { echo "ensure-fuzz-tools: clang installed but cannot build a libFuzzer target" >&2; exit 1; }
