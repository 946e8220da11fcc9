"""The records the stream shares with Xen's migration stream, judged by Xen
itself: each domain section with its live-update-only records removed is a
libxc stream that Xen 4.17's own verifier (verify-stream-v2, from Debian's
xen-utils) accepts, and HVM_PARAMS carries what libxc's save writes."""
import os
import subprocess
import sys

from xen_public import lurecords as R
from xen_public import lustream as ls

from streamkit import IMAGE_HEADER, assemble, saved, sections  # noqa: F401 (saved: the fixture)

# libxc's save list for HVM and PVH guests, in its order, written from
# write_hvm_params() in tools/libs/guest/xg_sr_save_x86_hvm.c (Xen 4.17):
# STORE_PFN, IOREQ_PFN, BUFIOREQ_PFN, PAGING_RING_PFN, MONITOR_RING_PFN,
# SHARING_RING_PFN, VM86_TSS_SIZED, CONSOLE_PFN, ACPI_IOPORTS_LOCATION,
# VIRIDIAN, IDENT_PT, VM_GENERATION_ID_ADDR, IOREQ_SERVER_PFN,
# NR_IOREQ_SERVER_PAGES, X87_FIP_WIDTH, MCA_CAP.
LIBXC_SAVE_LIST = (1, 5, 6, 27, 28, 29, 37, 17, 19, 9, 12, 34, 32, 33, 36, 38)
HVM_PARAMS, X86_PV_INFO = 0x0A, 0x02       # Xen's record numbers (libxc-migration-stream)


def migration_streams(data):
    """{domid: a libxc stream of that domain's shared records}."""
    out = {}
    for header, recs in sections(data)[1:]:
        shared = [r for r in recs if not r[0] & 0x40000000]
        domid = R.DOMAIN.decode([b for t, b in recs if t == ls.REC_LU_DOMAIN][0], named=True).domid
        out[domid] = assemble([[header, shared]], data[:IMAGE_HEADER.size])
    return out


def xen_verify(xen_artifacts, stream, tmp_path):
    """Xen's verifier on one stream: (exit status, its output)."""
    path = tmp_path / "stream"
    path.write_bytes(stream)
    env = dict(os.environ, PYTHONPATH=str(xen_artifacts.xen_python))
    r = subprocess.run([sys.executable, str(xen_artifacts.verify_stream), "-v", "-i", str(path)],
                       capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_every_domain_section_is_a_stream_xen_verifies(saved, xen_artifacts, tmp_path):
    hv, data, _ = saved
    assert (ls.REC_X86_PV_INFO, ls.REC_HVM_PARAMS) == (X86_PV_INFO, HVM_PARAMS)
    streams = migration_streams(data)
    assert sorted(streams) == sorted(hv.domains)
    for domid, stream in streams.items():
        rc, out = xen_verify(xen_artifacts, stream, tmp_path)
        assert rc == 0, "d%d: %s" % (domid, out)
        dom = hv.domains[domid]
        kind = "x86 PV" if dom.dtype == "pv" else "x86 HVM"
        assert "Domain Header: %s from Xen 4.18" % kind in out, out
        # What Xen read: a PV domain its PV info and no parameters, PVH and
        # HVM their parameters.
        assert ("Libxc Record: x86 PV info, length 8" in out) == (dom.dtype == "pv"), out
        assert ("Libxc Record: HVM params" in out) == (dom.dtype != "pv"), out
        assert out.rstrip().endswith("Libxc Record: End, length 0"), out


def test_xen_verifier_refuses_what_migration_would(saved, xen_artifacts, tmp_path):
    """The oracle can fail: a reserved word set, and a live-update record
    left in, are each refused by Xen's verifier."""
    _, data, _ = saved
    header, recs = sections(data)[4]                         # d3, HVM
    shared = [[t, b] for t, b in recs if not t & 0x40000000]
    params = [r for r in shared if r[0] == HVM_PARAMS][0]
    params[1] = params[1][:4] + b"\x01" + params[1][5:]
    rc, out = xen_verify(xen_artifacts, assemble([[header, shared]], data[:IMAGE_HEADER.size]), tmp_path)
    assert rc == 1 and "Reserved field not zero (0x0001)" in out, out
    rc, out = xen_verify(xen_artifacts, assemble([[header, recs]], data[:IMAGE_HEADER.size]), tmp_path)
    assert rc == 1 and "Unrecognised record type 0x4000000" in out, out


def _params(data, domid):
    for header, recs in sections(data)[1:]:
        if R.DOMAIN.decode([b for t, b in recs if t == ls.REC_LU_DOMAIN][0], named=True).domid == domid:
            return [R.HVM_PARAMS.decode(b)[1] for t, b in recs if t == HVM_PARAMS]
    raise AssertionError("no d%d" % domid)


def test_hvm_params_hold_what_libxc_saves_in_its_order(saved):
    hv, data, _ = saved
    for domid, dom in hv.domains.items():
        records = _params(data, domid)
        if dom.dtype == "pv":
            assert records == [], "a PV domain has no HVM_PARAMS"
            continue
        (items,) = records
        indices = [i for i, _ in items]
        assert indices == [i for i in LIBXC_SAVE_LIST if dom.hvm_params.get(i)]
        assert all(v for _, v in items), "libxc leaves zero values out"
        # Xen keeps the xenstore and console pages of a PVH guest as well.
        assert {1, 17} <= set(indices)
        assert ({5, 6} <= set(indices)) == (dom.dtype == "hvm")
