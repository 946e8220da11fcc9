#!/usr/bin/env python3
"""Coverage-guided fuzzing of the Xen image parser with atheris (libFuzzer
for Python).

The target is kexec_lu.image.parse_image(), what `kexec-lu info` and
`kexec-lu load` run on an image file's bytes (load_image() reads the file,
then calls it), with kexec_lu and pyelftools instrumented for coverage.
Property: it returns an image that is self-consistent, or raises ImageError
with one non-empty line naming the file; any other exception, an input
over the time limit (-timeout) or memory limit (-rss_limit_mb) is a crash.

Seeds, written at run time (nothing binary is committed): the real Debian
xen.gz, its decompressed ELF and xen-syms (`make fetch-xen`), and images
from `hyperv-sim mkimage` (ELF32/ELF64, gzip or not, with and without the
XenLU notes or the multiboot2 header).  A custom mutator mutates a gzip
input's decompressed bytes most of the time, so the fuzzer gets past the
gzip layer into the ELF.

    python fuzz/fuzz_image.py [--seconds N] [--out DIR]

Output in DIR (default fuzz/out/image): seeds/, corpus/ (kept between runs),
artifacts/ (crashing inputs), fuzz.log.  Exit status 1 if anything crashed.
If atheris cannot be imported, runs tests/test_image_fuzz.py (hypothesis)
with more examples, repeatedly, for the same time instead.
"""
import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

MiB = 1 << 20
MAX_LEN = 4 * MiB          # xen-syms is 2.9 MB
INNER_LIMIT = 8 * MiB      # what the mutator decompresses at most
PATH = "fuzz"              # the file name parse_image puts in messages


# ---------------------------------------------------------------- the target

def _target():
    """The fuzzed function, imported under coverage instrumentation."""
    import atheris
    with atheris.instrument_imports(include=["kexec_lu", "elftools"]):
        from kexec_lu import image
        from kexec_lu.errors import ImageError

    def one_input(data):
        try:
            img = image.parse_image(data, PATH)
        except ImageError as e:
            msg = str(e)
            if not msg.startswith(PATH + ": ") or not msg[len(PATH) + 2:].strip() \
                    or "\n" in msg or "\r" in msg:
                raise AssertionError("ImageError is not one clear line: %r" % msg) from None
            return
        # Accepted: what every caller relies on.
        assert img.segments and 0 < img.load_size <= image.MAX_LOAD_SIZE, img
        assert img.load_start <= img.entry < img.load_end, img
        for s in img.segments:
            assert len(s.data) == s.filesz <= s.memsz, s
        if img.load_size <= 16 * MiB:
            assert len(img.loaded_bytes()) == img.load_size
        json.dumps(img.to_json())

    def mutate(data, max_size, seed):
        rng = random.Random(seed)
        if data[:2] == b"\x1f\x8b" and rng.random() < 0.8:
            try:
                inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, INNER_LIMIT)
            except zlib.error:
                inner = b""
            if inner:
                inner = atheris.Mutate(inner, min(len(inner) + 4096, INNER_LIMIT))
                return gzip.compress(inner, compresslevel=1, mtime=0)[:max_size]
        return atheris.Mutate(data, max_size)

    return atheris, one_input, mutate


def worker(argv):
    atheris, one_input, mutate = _target()
    atheris.Setup([sys.argv[0]] + argv, one_input, custom_mutator=mutate)
    atheris.Fuzz()


# ---------------------------------------------------------------- seeds

def xen_cache():
    return os.environ.get("KEXEC_LU_XEN_CACHE", os.path.join(REPO, ".cache", "xen"))


def write_seeds(seed_dir):
    """Seed files into seed_dir (replaced each run); returns their names."""
    from hyperv_sim.mkimage import build_image
    os.makedirs(seed_dir, exist_ok=True)
    for name in os.listdir(seed_dir):
        os.unlink(os.path.join(seed_dir, name))
    seeds = {}
    root = os.path.join(xen_cache(), "root")
    real = {"xen.gz": os.path.join(root, "boot", "xen-4.17-amd64.gz"),
            "xen-syms": os.path.join(root, "usr", "lib", "debug", "boot", "xen-syms-4.17-amd64")}
    for name, path in real.items():
        if os.path.exists(path):
            with open(path, "rb") as f:
                seeds[name] = f.read()
        else:
            print("fuzz_image: %s missing (make fetch-xen); seeding without it" % path)
    if "xen.gz" in seeds:
        seeds["xen.elf"] = gzip.decompress(seeds["xen.gz"])
    small = dict(text_size=64 * 1024, mem_size=192 * 1024)
    for cls in (32, 64):
        for gz in (False, True):
            for pers, lu in ((True, True), (True, False), (False, False)):
                seeds["mk-elf%d%s-%s" % (cls, ".gz" if gz else "", "lu" if lu else
                                         "notes" if pers else "plain")] = \
                    build_image(xen_version="4.19.1", elf_class=cls, gzip=gz, personality=pers,
                                lu=lu, **small)
        seeds["mk-elf%d-nomb2" % cls] = build_image(elf_class=cls, gzip=False, with_mb2=False,
                                                    **small)
        seeds["mk-elf%d-norelocatable" % cls] = build_image(elf_class=cls, gzip=False,
                                                            relocatable=False, **small)
    seeds["mk-default.gz"] = build_image(xen_version="4.18")
    elf = build_image(gzip=False, **small)
    seeds["mk-members.gz"] = gzip.compress(elf[:4096], mtime=0) + \
        gzip.compress(elf[4096:], mtime=0) + b"trailing"
    for name, data in seeds.items():
        with open(os.path.join(seed_dir, name), "wb") as f:
            f.write(data[:MAX_LEN])
    return sorted(seeds)


# ---------------------------------------------------------------- without atheris

def hypothesis_fallback(seconds, why):
    """The same property through tests/test_image_fuzz.py, many times over."""
    print("fuzz_image: atheris unavailable (%s); running the hypothesis tests with "
          "KEXEC_LU_FUZZ_SCALE=4 for %d s instead" % (why, seconds), flush=True)
    start, tried, failed, rounds = time.monotonic(), 0, 0, 0
    while time.monotonic() - start < seconds:
        rounds += 1
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--hypothesis-show-statistics", "--hypothesis-seed=%d" % (int(time.time()) + rounds),
             os.path.join(REPO, "tests", "test_image_fuzz.py"), "-k", "not cli"],
            cwd=REPO, capture_output=True, text=True,
            env=dict(os.environ, KEXEC_LU_FUZZ_SCALE="4"))
        tried += sum(int(n) for n in re.findall(r"(\d+) passing", proc.stdout))
        if proc.returncode:
            failed += 1
            print(proc.stdout[-3000:], flush=True)
    wall = time.monotonic() - start
    print("image parser (hypothesis fallback): %d inputs tried in %.0f s, %d failing rounds"
          % (tried, wall, failed))
    return 1 if failed else 0


# ---------------------------------------------------------------- main

def main():
    if sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 300)))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "image"))
    args = ap.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError as e:
        return hypothesis_fallback(args.seconds, e)
    import libfuzzer
    seeds = os.path.join(args.out, "seeds")
    names = write_seeds(seeds)
    print("fuzz_image: %d seeds (%s), %d s" % (len(names), ", ".join(names), args.seconds),
          flush=True)
    r = libfuzzer.run([sys.executable, os.path.abspath(__file__), "--worker"],
                      os.path.join(args.out, "corpus"), seeds, args.seconds, args.out,
                      options=["-timeout=20", "-rss_limit_mb=3072", "-max_len=%d" % MAX_LEN],
                      label="fuzz_image")
    print(libfuzzer.summary("image parser (atheris)", r))
    return 1 if r["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
