"""Decode a live-update stream record by record, like Xen's verify-stream:
one line per record with its offset, type, length and what it says."""
from xen_public import lustream as ls

from xen_public import lurecords as R
from .restore import _DECODERS
from .stream import DOMAIN_HEADER, IMAGE_HEADER, StreamError, iter_sections, validate

KNOWN = set(ls.ALL_RECORD_TYPES)


def _summary(rtype, value):
    if value is None:
        return ""
    if rtype == ls.REC_LU_VERSION:
        return "xen %d.%d, format %d, %d domains" % value
    if rtype == ls.REC_LU_DOMAIN:
        domid, flags, dtype, vcpus, _, shinfo, name = value
        f = [n for bit, n in ((R.DOM_CONTROL, "control"), (R.DOM_PAUSED, "paused"), (R.DOM_DYING, "dying")) if flags & bit]
        return "d%d %s %s, %d vCPUs, shared info 0x%x%s" % (domid, R.cstr(name), R.DTYPE_NAMES.get(dtype, dtype),
                                                             vcpus, shinfo, " (%s)" % ",".join(f) if f else "")
    if rtype in (ls.REC_LU_P2M_EXTENTS, ls.REC_LU_PAGE_OWNERSHIP, ls.REC_LU_PV_PAGE_TYPES,
                 ls.REC_LU_EVTCHN_PORTS, ls.REC_HVM_PARAMS, ls.REC_LU_GRANT_MAPS,
                 ls.REC_LU_FOREIGN_MAPS, ls.REC_LU_XEN_REGIONS, ls.REC_LU_GRANT_STATUS):
        extra = ""
        if rtype == ls.REC_LU_P2M_EXTENTS:
            extra = ", %d frames" % sum(n for _, _, n in value)
        return "%d entries%s" % (len(value), extra)
    if rtype == ls.REC_LU_VCPU_STATE:
        return "vCPU%d, %d steps, rip 0x%x" % (value[0], value[4], value[5 + R.REG_NAMES.index("rip")])
    if rtype == ls.REC_LU_GRANT_TABLE:
        (n, version), _ = value
        return "v%d, %d frames" % (version, n)
    if rtype == ls.REC_LU_IOREQ_SERVER:
        (n, sid, dm, gfn, _, _), _ = value
        return "server %d, device model in d%d, ioreq gfn 0x%x, %d ports" % (sid, dm, gfn, n)
    if rtype == ls.REC_LU_IOMMU:
        root, extents, devices = value
        return "root 0x%x, %d table frames, devices %s" % (root, sum(n for _, n in extents), " ".join(devices))
    if rtype == ls.REC_LU_M2P:
        return "at mfn 0x%x, %d entries" % value
    if rtype == ls.REC_LU_EVTCHN_FIFO:
        return "event array gfn 0x%x, control gfn 0x%x" % value
    if rtype == ls.REC_LU_TIMINGS:
        (n, _, uid), phases = value
        return "update 0x%x: %s" % (uid, ", ".join(R.cstr(p[0]) for p in phases))
    return ""


def dump(buf):
    """-> list of dicts, one per header and record; StreamError if the
    framing is broken (with the record and offset)."""
    validate(buf, KNOWN)
    out = [{"offset": 0, "what": "image header", "length": IMAGE_HEADER.size}]
    for header, recs in iter_sections(buf):
        if header is not None:
            out.append({"offset": recs[0][0] - DOMAIN_HEADER.size, "what": "domain header",
                        "length": DOMAIN_HEADER.size,
                        "summary": "type %s, Xen %d.%d" % ({1: "x86 PV", 2: "x86 HVM"}.get(header[0]), header[3], header[4])})
        for off, rtype, body in recs:
            dec = _DECODERS.get(rtype & ~ls.REC_OPTIONAL)
            try:
                value = dec(body) if dec else None
            except R.RecordError as e:
                raise StreamError("record %s at offset 0x%x: %s" % (ls.record_name(rtype), off, e))
            out.append({"offset": off, "what": ls.record_name(rtype), "type": rtype, "length": len(body),
                        "summary": _summary(rtype & ~ls.REC_OPTIONAL, value)})
    return out
