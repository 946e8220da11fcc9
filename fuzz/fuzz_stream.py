#!/usr/bin/env python3
"""Coverage-guided fuzzing of the live-update stream framing check
(lu_stream_validate and lu_hash64 in csrc/lu_stream.c) with libFuzzer.

Builds fuzz/stream_fuzz.c with clang -fsanitize=fuzzer,address,undefined,
writes sample streams (fuzz/make_stream_corpus.py) as seeds, and fuzzes
with fuzz/stream.dict for the given time.  A sanitizer report, a violated
invariant (fuzz/stream_check.h), a timeout or running out of memory is a
crash.

    python fuzz/fuzz_stream.py [--seconds N] [--out DIR]

Output in DIR (default fuzz/out/stream): stream_fuzz (the binary), seeds/,
corpus/ (kept between runs), artifacts/, fuzz.log.  Exit status 1 if
anything crashed, 2 if clang or its libFuzzer runtime is missing
(tools/ensure-fuzz-tools.sh installs them).
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import libfuzzer  # noqa: E402
import make_stream_corpus  # noqa: E402

CLANGS = ("clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14")


def build(out_dir):
    cc = os.environ.get("FUZZ_CC") or next((c for c in CLANGS if shutil.which(c)), None)
    if cc is None:
        sys.stderr.write("fuzz_stream: no clang (run tools/ensure-fuzz-tools.sh)\n")
        raise SystemExit(2)
    exe = os.path.join(out_dir, "stream_fuzz")
    cmd = [cc, "-g", "-O1", "-fno-omit-frame-pointer", "-fsanitize=fuzzer,address,undefined",
           "-fno-sanitize-recover=all", "-I", os.path.join(REPO, "csrc"), "-I", HERE,
           os.path.join(HERE, "stream_fuzz.c"), os.path.join(REPO, "csrc", "lu_stream.c"),
           "-o", exe]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write("fuzz_stream: %s failed:\n%s" % (" ".join(cmd), proc.stderr))
        raise SystemExit(2)
    return exe


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 300)))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "stream"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    exe = build(args.out)
    seeds = os.path.join(args.out, "seeds")
    os.makedirs(seeds, exist_ok=True)
    for name in os.listdir(seeds):
        os.unlink(os.path.join(seeds, name))
    streams = make_stream_corpus.sample_streams()
    for name, data in streams.items():
        with open(os.path.join(seeds, name + ".bin"), "wb") as f:
            f.write(data)
    print("fuzz_stream: %d seeds (%s), %d s" % (len(streams), ", ".join(sorted(streams)),
                                                 args.seconds), flush=True)
    r = libfuzzer.run([exe], os.path.join(args.out, "corpus"), seeds, args.seconds, args.out,
                      options=["-timeout=5", "-rss_limit_mb=2048", "-max_len=65536",
                               "-use_value_profile=1",
                               "-dict=" + os.path.join(HERE, "stream.dict")],
                      label="fuzz_stream")
    print(libfuzzer.summary("stream framing (libFuzzer)", r))
    return 1 if r["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
