"""`hyperv-sim stream dump`: a live-update stream record by record, like
Xen's verify-stream: one line per header and record with its offset, type,
length and what it says.  Records are decoded as xen#2 decodes them
(xen_public.lurecords), so a record dump accepts, xen#2's decode accepts."""
from xen_public import abi, lurecords as R, lustream as ls
from xen_public.units import count

from .stream import DOMAIN_HEADER, IMAGE_HEADER, RECORD_HEADER, StreamError, iter_sections, validate

KNOWN = set(ls.ALL_RECORD_TYPES)
DOMAIN_HEADER_TYPES = {1: "x86 PV", 2: "x86 HVM"}
FLAG_NAMES = ((R.DOM_CONTROL, "control"), (R.DOM_PAUSED, "paused"), (R.DOM_DYING, "dying"))


def _entries(rec, value):
    return count(rec.count(value), "entry", "entries")


def _domain(rec, d):
    flags = [name for bit, name in FLAG_NAMES if d.flags & bit]
    return "d%d %s %s, %s, shared info 0x%x%s" % (
        d.domid, R.cstr(d.name), R.DTYPE_NAMES.get(d.dtype, d.dtype), count(d.vcpus, "vCPU"),
        d.shared_info_mfn, " (%s)" % ",".join(flags) if flags else "")


def _p2m(rec, v):
    return "%s, %s" % (_entries(rec, v), count(sum(e.count for e in v.items), "frame"))


def _timings(rec, v):
    names = ", ".join(R.cstr(p.name) for p in v.items)
    return "update 0x%x%s" % (v.head.update_id, ": " + names if names else "")


def _iommu(rec, v):
    devices = " ".join(v.devices)
    return "root 0x%x, %s%s" % (v.root, count(sum(n for _, n in v.extents), "table frame"),
                                ", devices " + devices if devices else "")


# What each record says, from its named fields; a field with nothing in it
# says nothing.
SUMMARIES = {
    ls.REC_LU_VERSION: lambda rec, v: "xen %s, format %d, %s" % (abi.version_text(v[0], v[1], R.cstr(v[4], "ascii")),
                                                                  v[2], count(v[3], "domain")),
    ls.REC_LU_XEN_REGIONS: _entries,
    ls.REC_LU_M2P: lambda rec, v: "at mfn 0x%x, %s" % (v[0], count(v[1], "entry", "entries")),
    ls.REC_LU_TIMINGS: _timings,
    ls.REC_LU_KEXEC_IMAGE: lambda rec, v: "type %d, %s, entry 0x%x, sha256 %s..." % (
        v.head.ktype, count(v.head.nr_segments, "segment"), v.head.entry, v.head.sha256[:8].hex()),
    ls.REC_LU_DOMAIN: _domain,
    ls.REC_X86_PV_INFO: lambda rec, v: "%d-byte guest, %d-level page tables" % (v.guest_width, v.pt_levels),
    ls.REC_LU_P2M_EXTENTS: _p2m,
    ls.REC_LU_PAGE_OWNERSHIP: _entries,
    ls.REC_LU_PV_PAGE_TYPES: _entries,
    ls.REC_LU_GRANT_TABLE: lambda rec, v: "v%d, %s" % (v.head.version, count(v.head.nr_frames, "frame")),
    ls.REC_LU_GRANT_STATUS: _entries,
    ls.REC_LU_EVTCHN_FIFO: lambda rec, v: "event array gfn 0x%x, control gfn 0x%x" % v,
    ls.REC_LU_EVTCHN_PORTS: _entries,
    ls.REC_LU_VCPU_STATE: lambda rec, v: "vCPU%d, %s, rip 0x%x" % (v.vcpu, count(v.steps, "step"), v.rip),
    ls.REC_HVM_PARAMS: _entries,
    ls.REC_LU_HVM_PARAMS: _entries,
    ls.REC_LU_IOREQ_SERVER: lambda rec, v: "server %d, device model in d%d, ioreq gfn 0x%x, %s" % (
        v.head.server_id, v.head.dm_domid, v.head.ioreq_gfn, count(v.head.nr_ports, "port")),
    ls.REC_LU_GRANT_MAPS: _entries,
    ls.REC_LU_FOREIGN_MAPS: _entries,
    ls.REC_LU_IOMMU: _iommu,
}


def summary(rtype, body, at=0):
    """What one record says ("" for END and types this format lacks);
    RecordError if its body breaks its layout."""
    rec = R.TYPES.get(rtype & ~ls.REC_OPTIONAL)
    if rec is None:
        return ""
    return SUMMARIES[rec.rtype](rec, rec.decode(body, at, named=True))


def dump(buf):
    """-> list of dicts, one per header and record; StreamError if the
    framing is broken (with the record and offset)."""
    validate(buf, KNOWN)
    out = [{"offset": 0, "what": "image header", "length": IMAGE_HEADER.size}]
    for header, recs in iter_sections(buf):
        if header is not None:
            out.append({"offset": recs[0][0] - DOMAIN_HEADER.size, "what": "domain header",
                        "length": DOMAIN_HEADER.size,
                        "summary": "type %s, Xen %d.%d" % (DOMAIN_HEADER_TYPES.get(header[0]),
                                                          header[3], header[4])})
        for off, rtype, body in recs:
            try:
                said = summary(rtype, body, off + RECORD_HEADER.size)
            except R.RecordError as e:
                raise StreamError("record %s at offset 0x%x: %s" % (ls.record_name(rtype), off, e))
            out.append({"offset": off, "what": ls.record_name(rtype), "type": rtype, "length": len(body),
                        "summary": said})
    return out
