#!/usr/bin/env python3
"""Sample live-update streams: the seed corpus of fuzz/stream_fuzz.c and the
inputs tests/test_stream_asan.py corrupts.

Two kinds.  Real streams, saved in this process by a simulated hypervisor
(as tests/test_stream.py does): dom0 only, and dom0 plus PV, PVH (FIFO event
channels, grant table v2), HVM (PCI passthrough) and a tiny PVH guest.  And
small hand-framed ones for the edges of the framing: the least stream xen#2
accepts, unknown optional records, empty and unpadded-looking bodies.

    python fuzz/make_stream_corpus.py OUT_DIR      # writes OUT_DIR/<name>.bin
"""
import os
import struct
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from xen_public import lustream as ls  # noqa: E402

GiB, MiB = 1 << 30, 1 << 20


# ---------------------------------------------------------------- framing by hand

def image_header():
    return struct.pack(">QIIH6x", ls.STREAM_MARKER, ls.STREAM_ID, ls.STREAM_VERSION, 0)


def record(rtype, body=b""):
    return struct.pack("<II", rtype, len(body)) + body + bytes(-len(body) % 8)


def domain_header(dtype=1, major=4, minor=19):
    return struct.pack("<IHHII", dtype, 12, 0, major, minor)


def lu_version(ndomains, major=4, minor=18):
    return record(ls.REC_LU_VERSION, struct.pack("<IIII16s", major, minor, ls.LU_FORMAT_VERSION,
                                                  ndomains, b".0"))


def handmade_streams():
    end = record(ls.REC_END)
    return {
        "minimal": image_header() + lu_version(0) + end,
        "empty-domain": image_header() + lu_version(1) + end + domain_header() + end,
        "hvm-domain": image_header() + lu_version(1) + end + domain_header(2)
        + record(ls.REC_LU_DOMAIN, bytes(13)) + end,
        "optional-unknown": image_header() + lu_version(1)
        + record(0xC0000099, b"12345678") + record(0x80000001, b"abc") + end
        + domain_header() + record(ls.REC_LU_VCPU_STATE | ls.REC_OPTIONAL, bytes(3)) + end,
        "odd-lengths": image_header() + lu_version(2) + end
        + b"".join(domain_header(1 + i % 2) + record(ls.REC_LU_DOMAIN, bytes(n)) + end
                   for i, n in enumerate((1, 7))),
    }


# ---------------------------------------------------------------- real streams

def _hypervisor(state_dir, image):
    from hyperv_sim.bootloader import power_on
    from hyperv_sim.console import Console
    from hyperv_sim.hypervisor import Hypervisor
    from hyperv_sim.ram import HostRAM
    ram_path, entry, _ = power_on(image, state_dir, 4 * GiB, "liveupdate=64M dom0_mem=512M")
    return Hypervisor(HostRAM.open(ram_path), entry, Console(), nr_pcpus=2)


def _saved(hv):
    from hyperv_sim.liveupdate.save import build_stream
    with hv.sched.stopped():
        data, _types = build_stream(hv, [("save", 1, 2)], set(), update_id=7)
    return data


def real_streams():
    """{name: stream bytes} saved by hypervisors in this process."""
    from hyperv_sim.mkimage import write_image
    out = {}
    with tempfile.TemporaryDirectory(prefix="stream-corpus-") as tmp:
        image = os.path.join(tmp, "xen-4.18.gz")
        write_image(image, xen_version="4.18")
        hv = _hypervisor(os.path.join(tmp, "h1"), image)
        try:
            out["dom0-only"] = _saved(hv)
        finally:
            hv.close()
        hv = _hypervisor(os.path.join(tmp, "h2"), image)
        try:
            hv.create_domain("pv", "pv", 128 * MiB, 2)
            hv.create_domain("pvh", "pvh", 128 * MiB, 1, evtchn_abi="fifo", grant_version=2)
            hv.create_domain("hvm", "hvm", 128 * MiB, 2, pci=["0000:03:00.0"])
            hv.create_domain("tiny", "pvh", 16 * MiB, 1)
            out["mixed"] = _saved(hv)
        finally:
            hv.close()
    return out


def sample_streams():
    return dict(real_streams(), **handmade_streams())


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: make_stream_corpus.py OUT_DIR\n")
        return 2
    os.makedirs(argv[1], exist_ok=True)
    for name, data in sorted(sample_streams().items()):
        with open(os.path.join(argv[1], name + ".bin"), "wb") as f:
            f.write(data)
        print("%-18s %6d bytes" % (name, len(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
