"""References other parties hold on a domain's pages: dom0's grant maps and
foreign maps, and Xen's own global maps (FIFO event arrays, ioreq pages).
Each takes a general and a writable-type reference, as Xen's
get_page_and_type() does for a PV mapper."""

from xen_public import abi

from ._lu_core import lib
from .grant import GrantError, GrantMap
from .guest import P2M

WRITABLE = lib.LU_PGT_WRITABLE


class PageMap:
    """A page of `domid` mapped by `mapper`: another domain (a foreign map)
    or Xen itself (DOMID_XEN: FIFO event arrays, ioreq pages)."""

    def __init__(self, mapper, domid, gfn, mfn, what):
        self.mapper, self.domid, self.gfn, self.mfn, self.what = mapper, domid, gfn, mfn, what

    def describe(self):
        return dict(self.__dict__)


class Mappings:
    def __init__(self, frametable):
        self.ft = frametable
        self.grant_maps = []
        self.foreign_maps = []
        self.xen_maps = []
        self._next_handle = 0

    # grant maps

    def restore_grant_map(self, gm):
        """A grant map as a live update's stream hands it over (its frame's
        reference taken by the caller); later handles come after it."""
        self.grant_maps.append(gm)
        self._next_handle = max(self._next_handle, gm.handle + 1)

    def map_grant(self, mapper, granter, ref, writable):
        flags, domid, gfn = granter.grants.entry(ref)
        if not flags & abi.GTF_permit_access:
            raise GrantError("d%d ref %d: not a grant" % (granter.domid, ref))
        if domid != mapper.domid:
            raise GrantError("d%d ref %d is granted to d%d, not d%d" % (granter.domid, ref, domid, mapper.domid))
        if writable and flags & abi.GTF_readonly:
            raise GrantError("d%d ref %d is read-only" % (granter.domid, ref))
        mfn = P2M(granter.p2m).mfn(gfn)
        self.ft.get_ref(mfn, WRITABLE if writable else None)
        gm = GrantMap(self._next_handle, mapper.domid, granter.domid, ref, writable, mfn)
        self._next_handle += 1
        self.grant_maps.append(gm)
        self._mark_in_use(granter, ref)
        return gm

    def unmap_grant(self, granter, gm):
        self.grant_maps.remove(gm)
        self.ft.put_ref(gm.mfn, WRITABLE if gm.writable else None)
        self._mark_in_use(granter, gm.ref)

    def _mark_in_use(self, granter, ref):
        maps = [m for m in self.grant_maps if m.granter == granter.domid and m.ref == ref]
        granter.grants.set_in_use(ref, reading=bool(maps), writing=any(m.writable for m in maps))

    # foreign and Xen maps

    def map_foreign(self, mapper, dom, gfn, what):
        mfn = P2M(dom.p2m).mfn(gfn)
        self.ft.get_ref(mfn, WRITABLE)
        fm = PageMap(mapper.domid, dom.domid, gfn, mfn, what)
        self.foreign_maps.append(fm)
        return fm

    def map_xen(self, dom, gfn, what):
        mfn = P2M(dom.p2m).mfn(gfn)
        self.ft.get_ref(mfn, WRITABLE)
        xm = PageMap(abi.DOMID_XEN, dom.domid, gfn, mfn, what)
        self.xen_maps.append(xm)
        return xm

    # teardown

    def held_on(self, domid):
        """Mappings other domains hold on domid's pages."""
        return ([m for m in self.grant_maps if m.granter == domid and m.mapper != domid]
                + [m for m in self.foreign_maps if m.domid == domid and m.mapper != domid])

    def release_held_on(self, granter):
        """dom0's backends and device models let go of granter's pages."""
        for gm in [m for m in self.grant_maps if m.granter == granter.domid]:
            self.unmap_grant(granter, gm)
        for fm in [m for m in self.foreign_maps if m.domid == granter.domid]:
            self.foreign_maps.remove(fm)
            self.ft.put_ref(fm.mfn, WRITABLE)

    def release_xen_maps(self, domid):
        for xm in [m for m in self.xen_maps if m.domid == domid]:
            self.xen_maps.remove(xm)
            self.ft.put_ref(xm.mfn, WRITABLE)

    def describe(self):
        return {"grant_maps": [m.describe() for m in self.grant_maps],
                "foreign_maps": [m.describe() for m in self.foreign_maps],
                "xen_maps": [m.describe() for m in self.xen_maps]}
