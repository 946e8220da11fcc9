"""The breadcrumb, MFN array and stream as kexec-lu-stream(5) lays them out,
read back from host RAM after an update that halted past the point of no
return: the layout is written here as literals from the man page, and the
hashes are recomputed from the man page's definition over the bytes gathered
through the MFN array, not with the code that wrote them."""
import os
import random
import struct
import time

from bench import reference
from hyperv_sim._lu_core import ffi, lib
from kexec_lu.liveupdate import run_live_update

from helpers import boot_host, stop_host

PAGE = 4096
MAGIC = 0x4C69766555706000          # "LiveUpda" little-endian, low 12 bits cleared
WORDS = ("magic", "mfn_array", "size", "length", "stream_hash", "array_hash", "exec_ns",
         "save_end_ns")             # eight little-endian u64 words, in this order
M64 = (1 << 64) - 1


# bench/reference.py's hash64 follows kexec-lu-stream(5)'s definition step
# by step in plain Python: the oracle here, as it is for the C core.
spec_hash = reference.hash64


def test_the_c_hash_is_the_documented_one():
    rng = random.Random(7)
    for n in list(range(0, 40)) + [4095, 4096, 4097, 20000]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert lib.lu_hash64(ffi.from_buffer("uint8_t[]", data), n) == spec_hash(data), n


def test_breadcrumb_array_and_stream_in_ram_are_as_documented(tmp_path, sim_images):
    state = tmp_path / "host"
    host = boot_host(state, sim_images["4.18"], memory=1 << 30)
    try:
        host.toolstack("create", name="pv", type="pv", memory=64 << 20, vcpus=1)
        host.toolstack("create", name="pvh", type="pvh", memory=64 << 20, vcpus=2)
        info = host.toolstack("info")
        lu_start, lu_size = info["lu_bootmem"]["start"], info["lu_bootmem"]["size"]
        res = host.kexec_lu("load", "--type", "liveupdate", "--append", "lu_fault=restore-start",
                            str(sim_images["4.19"]))
        assert res.returncode == 0, res
        before = time.monotonic_ns()
        rep = run_live_update(host.client, timeout=60)
        after = time.monotonic_ns()
        assert rep["state"] == "halted", rep

        with open(os.path.join(state, "ram"), "rb") as f:
            ram = f.read()
        crumb = dict(zip(WORDS, struct.unpack_from("<8Q", ram, lu_start)))
        assert crumb["magic"] == MAGIC
        assert ram[lu_start + 64:lu_start + PAGE] == bytes(PAGE - 64)

        nr_mfns = -(-crumb["length"] // PAGE)
        assert crumb["size"] == nr_mfns << 12
        array_at = crumb["mfn_array"]
        assert array_at % PAGE == 0 and array_at + 8 * nr_mfns <= len(ram)
        assert not lu_start <= array_at < lu_start + lu_size
        array = ram[array_at:array_at + 8 * nr_mfns]
        mfns = struct.unpack("<%dQ" % nr_mfns, array)
        tail = array_at + 8 * nr_mfns
        assert ram[tail:-(-tail // PAGE) * PAGE] == bytes(-tail % PAGE)   # rest of its page zero
        for mfn in mfns:
            assert mfn * PAGE + PAGE <= len(ram)
            assert not lu_start <= mfn * PAGE < lu_start + lu_size
        pages = b"".join(ram[m * PAGE:(m + 1) * PAGE] for m in mfns)
        stream = pages[:crumb["length"]]
        assert pages[crumb["length"]:] == bytes(len(pages) - crumb["length"])  # zero-filled

        # The image header: big-endian marker ~0, id "XENF", version 3.
        assert struct.unpack_from(">QII", stream) == (M64, 0x58454E46, 3)
        assert crumb["stream_hash"] == spec_hash(stream)
        assert crumb["array_hash"] == spec_hash(array)
        assert before < crumb["save_end_ns"] <= crumb["exec_ns"] < after

        res = host.hyperv_sim("recover", "--image", str(sim_images["4.19"]))
        assert res.returncode == 0, res
        with open(os.path.join(state, "ram"), "rb") as f:
            f.seek(lu_start)
            assert f.read(64) == bytes(64)                  # zeroed once restored
        rep = host.toolstack("verify")
        assert rep["ok"], rep["problems"]
    finally:
        stop_host(state)
