"""The C core's workload against a plain-Python reference: values, the
closed-form registers, and the memory check, on the same data."""
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperv_sim._lu_core import ffi, lib

M64 = (1 << 64) - 1


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def value(seed, vcpu, k):
    return mix64(seed ^ mix64(((vcpu << 48) ^ k) & M64))


def dm_read(addr):
    return mix64((addr * 3 + 1) & M64)


def regs(seed, vcpu, ws_pages, io_every, ring_every, steps):
    slots = ws_pages * 512
    r = dict(rsp=0x7FFF0000 - vcpu * 0x10000, rsi=seed ^ vcpu, rdi=ws_pages, rflags=0x202,
             rip=0x400000 + (steps % 1024) * 16, rbx=steps)
    if steps:
        r.update(rax=value(seed, vcpu, steps - 1), rcx=(steps - 1) % slots)
    if steps > 1:
        r["r8"] = value(seed, vcpu, steps - 2)
    if ring_every:
        r["r13"] = steps // ring_every
    if io_every and steps >= io_every:
        r["r12"] = steps // io_every
        r["rdx"] = dm_read(0xFED00000 + ((steps // io_every - 1) % 65536) * 8)
    return r


def memory(seed, vcpu, ws_pages, steps):
    """{(page, word): value} a fresh working set holds after `steps` steps."""
    slots = ws_pages * 512
    mem = {}
    for k in range(max(0, steps - slots), steps):
        s = k % slots
        mem[(s % ws_pages, s // ws_pages)] = value(seed, vcpu, k)
    return mem


u64 = st.integers(0, M64)


@settings(max_examples=300, deadline=None)
@given(seed=u64, vcpu=st.integers(0, 127), k=u64)
def test_values_match(seed, vcpu, k):
    assert lib.lu_workload_value(seed, vcpu, k) == value(seed, vcpu, k)


@settings(max_examples=300, deadline=None)
@given(seed=u64, vcpu=st.integers(0, 127), ws=st.integers(1, 64), io=st.sampled_from([0, 1, 7, 65536]),
       ring=st.sampled_from([0, 3, 32768]), steps=st.integers(0, 10**12))
def test_registers_match(seed, vcpu, ws, io, ring, steps):
    out = ffi.new("struct lu_regs *")
    lib.lu_workload_regs(seed, vcpu, ws, io, ring, steps, out)
    want = regs(seed, vcpu, ws, io, ring, steps)
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
                 "r11", "r12", "r13", "r14", "r15", "rip", "rflags"):
        assert getattr(out, name) == want.get(name, 0), name


@settings(max_examples=60, deadline=None)
@given(seed=u64, vcpu=st.integers(0, 3), ws=st.integers(1, 3), steps=st.integers(0, 5000),
       flip=st.one_of(st.none(), st.integers(0, 3 * 512 - 1)))
def test_memory_check_matches_and_finds_a_flipped_word(seed, vcpu, ws, steps, flip):
    ram = bytearray(ws * 4096)
    for (page, word), v in memory(seed, vcpu, ws, steps).items():
        ram[page * 4096 + word * 8:page * 4096 + word * 8 + 8] = v.to_bytes(8, "little")
    buf = ffi.from_buffer("uint8_t[]", ram)
    mfns = ffi.new("uint64_t[]", list(range(ws)))
    slot, got, want = ffi.new("uint64_t *"), ffi.new("uint64_t *"), ffi.new("uint64_t *")
    assert lib.lu_workload_check(ffi.cast("uint8_t *", buf), mfns, ws, seed, vcpu, steps,
                                 slot, got, want) == 0
    if flip is not None and flip < ws * 512:
        page, word = flip % ws, flip // ws
        ram[page * 4096 + word * 8] ^= 1
        assert lib.lu_workload_check(ffi.cast("uint8_t *", buf), mfns, ws, seed, vcpu, steps,
                                     slot, got, want) == 1
        assert slot[0] == flip and got[0] ^ want[0] == 1
