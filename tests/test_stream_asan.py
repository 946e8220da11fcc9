"""lu_stream_validate (csrc/lu_stream.c) under AddressSanitizer and UBSan.

xen#2 runs the C framing check on whatever it finds in RAM, before trusting
any of it.  fuzz/stream_replay.c, built with gcc -fsanitize=address,undefined,
runs it over many inputs in one process, each in a heap buffer of exactly
its size: every single-byte corruption (three values at every offset) and
every truncation of sample streams (fuzz/make_stream_corpus.py: real streams
saved by simulated hypervisors, and hand-framed edge cases), plus seeded
random ones.  No sanitizer report, exit status 0, and every result equal to
what a model of the framing written from docs/stream-format.md says, and to
the installed cffi build's.  `make fuzz` runs the libFuzzer harness
(fuzz/stream_fuzz.c) on the same function.
"""
import importlib.util
import os
import random
import shutil
import struct
import subprocess

import pytest

from xen_public import lustream as ls

from helpers import REPO

FUZZ = REPO / "fuzz"
CSRC = REPO / "csrc"
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
ALL = tuple(ls.ALL_RECORD_TYPES)
SEED = int(os.environ.get("KEXEC_LU_FUZZ_SEED", "20240611"))
RANDOM_INPUTS = 3000 * max(1, int(os.environ.get("KEXEC_LU_FUZZ_SCALE", "1")))

# enum lu_stream_error (csrc/lu_core.h)
TRUNCATED, BAD_HEADER, UNKNOWN_RECORD, BAD_PADDING, TOO_LARGE, BAD_DOMAIN, NO_END, \
    LU_ONLY_HEADER, RESERVED = range(-1, -10, -1)
RECORD_MAX = 128 << 20


# ---------------------------------------------------------------- the model

def model(buf, known):
    """(result, bad_offset, bad_type) the framing check must give, from the
    format's description: image header (marker ~0, "XENF", version 3, options
    0; 6 reserved bytes, zero), the system section (LU_VERSION first, up to END),
    then domain sections (type 1 or 2, page shift 12, a zero u16, records, END) to the
    last byte.  Records: u32 type, u32 length <= 128 MiB, body zero-padded
    to 8; a mandatory type must be known.  Offset and type are those of the
    record or header at fault; 0 when the result is a record count."""
    n = len(buf)
    if n < 24:
        return TRUNCATED, 0, 0
    if buf[:8] != b"\xff" * 8 or buf[8:16] != b"XENF\0\0\0\x03" or buf[16:18] != b"\0\0":
        return BAD_HEADER, 0, 0
    if buf[18:24] != bytes(6):
        return RESERVED, 18, 0
    off, total, system = 24, 0, True
    while system or off < n:
        if not system:
            if n - off < 16:
                return TRUNCATED, off, 0
            dtype, shift = struct.unpack_from("<IH", buf, off)
            if dtype not in (1, 2) or shift != 12:
                return BAD_DOMAIN, off, 0
            if buf[off + 6:off + 8] != b"\0\0":
                return RESERVED, off + 6, 0
            off += 16
        count = 0
        while True:
            if n - off < 8:
                return NO_END, off, 0
            rtype, length = struct.unpack_from("<II", buf, off)
            if system and count == 0 and rtype != ls.REC_LU_VERSION:
                return LU_ONLY_HEADER, off, rtype
            if length > RECORD_MAX:
                return TOO_LARGE, off, rtype
            padded = -(-length // 8) * 8
            if padded > n - off - 8:
                return TRUNCATED, off, rtype
            if rtype != ls.REC_END and not rtype & ls.REC_OPTIONAL and rtype not in known:
                return UNKNOWN_RECORD, off, rtype
            if any(buf[off + 8 + length:off + 8 + padded]):
                return BAD_PADDING, off, rtype
            off += 8 + padded
            count += 1
            if rtype == ls.REC_END:
                break
        total += count
        system = False
    return total, 0, 0


def section_ends(buf):
    """{offset just after a section's END: records up to there} of a valid stream."""
    ends, off, count, system = {}, 24, 0, True
    while off < len(buf):
        if not system:
            off += 16
        while True:
            rtype, length = struct.unpack_from("<II", buf, off)
            off += 8 + -(-length // 8) * 8
            count += 1
            if rtype == ls.REC_END:
                break
        ends[off] = count
        system = False
    return ends


# ---------------------------------------------------------------- running it

@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("asan") / "stream_replay"
    cmd = [CC, "-std=gnu11", "-g", "-O1", "-fno-omit-frame-pointer",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-Wall", "-Wextra",
           "-I", str(CSRC), "-I", str(FUZZ), str(FUZZ / "stream_replay.c"),
           str(CSRC / "lu_stream.c"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, "building the ASan driver failed:\n" + proc.stderr
    return exe


SANITIZER_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:abort_on_error=0:detect_leaks=1:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


def run_replay(exe, inputs, known=ALL):
    """[(result, bad_offset, bad_type, hash)] for inputs, in one process."""
    stdin = b"".join(struct.pack("<I", len(d)) + d for d in inputs)
    proc = subprocess.run([str(exe), "-k", ",".join("0x%x" % k for k in known)], input=stdin,
                          capture_output=True, env=dict(os.environ, **SANITIZER_ENV), timeout=300)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "Sanitizer" not in err and "runtime error" not in err \
        and "INVARIANT" not in err, "status %d:\n%s" % (proc.returncode, err[-4000:])
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(inputs)
    out = []
    for line in lines:
        n, off, rtype, h = line.split()
        out.append((int(n), int(off), int(rtype), int(h, 16)))
    return out


def cffi_validate(buf, known):
    from hyperv_sim._lu_core import ffi, lib
    arr = ffi.new("uint32_t[]", list(known) or [0])
    off, rtype = ffi.new("uint64_t *"), ffi.new("uint32_t *")
    n = lib.lu_stream_validate(ffi.from_buffer("uint8_t[]", buf), len(buf), arr, len(known),
                               off, rtype)
    return (n, off[0], rtype[0]) if n < 0 else (n, 0, 0)


def cffi_hash(buf):
    from hyperv_sim._lu_core import ffi, lib
    return lib.lu_hash64(ffi.from_buffer("uint8_t[]", buf), len(buf))


def agree(inputs, results, known=ALL):
    """Each result equals the model's and the cffi build's."""
    known = set(known)
    for data, (n, off, rtype, h) in zip(inputs, results):
        want = model(data, known)
        assert (n, off, rtype) == want, "input of %d bytes: C says %r, the model %r" \
            % (len(data), (n, off, rtype), want)
        assert (n, off, rtype) == cffi_validate(data, known)
        assert h == cffi_hash(data)


# ---------------------------------------------------------------- samples

@pytest.fixture(scope="module")
def samples():
    spec = importlib.util.spec_from_file_location("make_stream_corpus",
                                                  FUZZ / "make_stream_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    streams = mod.sample_streams()
    assert {"dom0-only", "mixed", "minimal"} <= set(streams)
    return streams


def test_driver_knows_the_record_types_python_does(replay):
    """fuzz/stream_check.h's list (the libFuzzer harness uses it) is
    xen_public.lustream.ALL_RECORD_TYPES."""
    out = subprocess.run([str(replay), "--known"], capture_output=True, text=True, check=True)
    assert tuple(int(x, 16) for x in out.stdout.split()) == ALL


def test_samples_are_valid(replay, samples):
    names = sorted(samples)
    results = run_replay(replay, [samples[n] for n in names])
    for name, (n, _, _, _) in zip(names, results):
        assert n > 0, name
    agree([samples[n] for n in names], results)


def test_every_single_byte_corruption(replay, samples):
    """Three values at every offset of every sample: the C check gives what
    the model gives (so every change to a header field, a length, a type or
    padding is refused exactly when the format says so), and the image
    header's marker, id, version and options are never let through."""
    inputs, where = [], []
    for name, data in sorted(samples.items()):
        for pos in range(len(data)):
            for x in (0xFF, 0x01, 0x80):
                bad = bytearray(data)
                bad[pos] ^= x
                inputs.append(bytes(bad))
                where.append(pos)
    results = run_replay(replay, inputs)
    agree(inputs, results)
    for pos, (n, off, _, _) in zip(where, results):
        if pos < 18:
            assert (n, off) == (BAD_HEADER, 0)


def test_every_truncation(replay, samples):
    """A stream cut anywhere but just after a section's END is refused; cut
    there, the framing is whole (restore then refuses it: LU_VERSION counts
    the domains, the breadcrumb has the length and a hash)."""
    for name, data in sorted(samples.items()):
        cuts = list(range(len(data)))
        results = run_replay(replay, [data[:c] for c in cuts])
        ends = section_ends(data)
        assert max(ends) == len(data)
        for cut, (n, _, _, _) in zip(cuts, results):
            if cut in ends:
                assert n == ends[cut], (name, cut)
            else:
                assert n < 0, (name, cut, n)
        agree([data[:c] for c in cuts[:512]], results[:512])


def _random_stream(rng, known):
    """A stream framed from random pieces: mostly valid, some not."""
    def rec(rtype, body):
        pad = bytes(-len(body) % 8)
        if rng.random() < 0.05:
            pad = bytes(rng.randrange(1, 256) for _ in pad)
        return struct.pack("<II", rtype, len(body)) + body + pad

    def rtype():
        r = rng.random()
        if r < 0.6:
            return rng.choice(known)
        if r < 0.8:
            return rng.choice(known) | ls.REC_OPTIONAL
        return rng.getrandbits(32)

    out = struct.pack(">QIIH6x", ls.STREAM_MARKER, ls.STREAM_ID, ls.STREAM_VERSION, 0)
    out += rec(ls.REC_LU_VERSION, bytes(32))
    for s in range(rng.randrange(0, 5)):
        if s:
            out += struct.pack("<IHHII", rng.choice((1, 2, 1, 3)), rng.choice((12, 12, 13)), 0,
                               4, 19)
        for _ in range(rng.randrange(0, 6)):
            out += rec(rtype(), rng.randbytes(rng.choice((0, 1, 7, 8, 9, 24, 100))))
        out += rec(ls.REC_END, b"")
    return out


def _mangle(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        what = rng.random()
        if what < 0.4 and data:
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        elif what < 0.7 and len(data) >= 8:
            pos = rng.randrange(len(data) - 3)
            data[pos:pos + 4] = struct.pack("<I", rng.choice(
                (0, 7, 8, 0xFFFFFFF8, 0xFFFFFFFF, RECORD_MAX, RECORD_MAX + 1, len(data),
                 ls.REC_LU_VERSION, ls.REC_OPTIONAL, rng.getrandbits(32))))
        elif what < 0.85 and data:
            a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
            del data[a:b]
        elif data:
            a, b = sorted(rng.randrange(len(data) + 1) for _ in range(2))
            data[a:a] = data[a:b]
    return bytes(data)


def test_random_streams_and_known_lists(replay, samples):
    """Seeded random streams and mangled samples, with the full list of
    known types, none, and a random part of it."""
    rng = random.Random(SEED)
    known = list(ALL)
    base = list(samples.values())
    inputs = []
    for i in range(RANDOM_INPUTS):
        r = rng.random()
        if r < 0.4:
            inputs.append(_random_stream(rng, known))
        elif r < 0.9:
            inputs.append(_mangle(rng, rng.choice(base)))
        else:
            inputs.append(rng.randbytes(rng.randrange(0, 64)))
    for known_list in (ALL, (), tuple(sorted(rng.sample(known, 8)))):
        results = run_replay(replay, inputs, known=known_list)
        agree(inputs, results, known=known_list)
    verdicts = {n if n < 0 else "ok" for n, *_ in run_replay(replay, inputs)}
    assert "ok" in verdicts and len(verdicts) >= 6, verdicts


def test_a_sanitizer_report_fails_the_check(tmp_path):
    """The harness is not blind: an out-of-bounds read in a driver built
    the same way exits non-zero with a report."""
    if CC is None:
        pytest.skip("no C compiler")
    src = tmp_path / "oob.c"
    src.write_text("#include <stdlib.h>\nint main(void) { volatile char *p = malloc(8); "
                   "int r = p[8]; free((void *)p); return r; }\n")
    exe = tmp_path / "oob"
    subprocess.run([CC, "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    str(src), "-o", str(exe)], check=True, capture_output=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True,
                          env=dict(os.environ, **SANITIZER_ENV))
    assert proc.returncode == 86 and "AddressSanitizer: heap-buffer-overflow" in proc.stderr
