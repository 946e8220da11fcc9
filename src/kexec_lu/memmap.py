"""`kexec-lu map`: the host's memory as a picture, to scale.

Two bars: all of RAM, then the live-update window enlarged (LU bootmem, the
breadcrumb page, the running Xen and, for an image given on the command
line, where it would go and what becomes xen#2's LU bootmem).  The model
comes from Xen's own answers (XENMEM_maximum_ram_page, KEXEC_RANGE_MA_*);
on a simulated host the frame-by-frame use (guests, frame table, stream
pages...) is added from the simulator's memory map.
"""
from dataclasses import asdict, dataclass

from xen_public import abi
from xen_public.abi import PAGE_SIZE
from xen_public.units import addr_text, size_text
from .errors import USER_ERRORS, HypercallError

# One character and one colour per kind of memory, none shared: a reader
# tells every kind apart by either.
KINDS = {
    "free": (".", "grey50"), "reserved": ("r", "grey70"), "guest": ("g", "green"),
    "xen-image": ("X", "red"), "lu-bootmem": ("B", "yellow"), "xenheap": ("h", "magenta"),
    "kexec-image": ("k", "cyan"), "crash": ("c", "blue"), "lu-stream": ("S", "dark_orange"),
    "shared": ("s", "green4"), "m2p": ("m", "purple"), "iommu-pt": ("i", "orange4"),
    "breadcrumb": ("b", "bright_yellow"), "xen#2": ("2", "bright_red"),
    "boot-info": ("I", "bright_cyan"), "new-bootmem": ("N", "gold3"),
}
SVG_COLOURS = {
    "free": "#e8e8e8", "reserved": "#b0b0b0", "guest": "#7fc97f", "xen-image": "#e41a1c",
    "lu-bootmem": "#ffd92f", "xenheap": "#c994c7", "kexec-image": "#66c2a5", "crash": "#377eb8",
    "lu-stream": "#ff7f00", "shared": "#1b9e77", "m2p": "#984ea3", "iommu-pt": "#a65628",
    "breadcrumb": "#ff00ff", "xen#2": "#b2182b", "boot-info": "#00bcd4", "new-bootmem": "#e6ab02",
}


MARKERS = ("breadcrumb", "boot-info")


@dataclass
class Region:
    name: str
    kind: str
    start: int
    size: int

    @property
    def end(self):
        return self.start + self.size


class MemoryMap:
    def __init__(self, ram_size, regions, runs, window, plan=None):
        self.ram_size = ram_size
        self.regions = regions      # named ranges, from kexec_op
        self.runs = runs            # [Region] by use, the simulator's view (or [])
        self.window = window        # (start, end) of the LU window, or None
        self.plan = plan            # [Region] after the update, or None

    def to_json(self):
        return {"ram_size": self.ram_size,
                "regions": [asdict(r) for r in self.regions],
                "runs": [asdict(r) for r in self.runs],
                "window": {"start": self.window[0], "end": self.window[1]} if self.window else None,
                "after_update": [asdict(r) for r in self.plan] if self.plan is not None else None}


def collect(client, plan=None):
    """Build the map from the hypervisor's answers; plan: a LoadPlan for
    the image to show in the window."""
    ram_size = (client.max_ram_page() + 1) * PAGE_SIZE
    regions = []
    for name, rid in (("xen", abi.KEXEC_RANGE_MA_XEN), ("lu-bootmem", abi.KEXEC_RANGE_MA_LIVEUPDATE),
                      ("crash", abi.KEXEC_RANGE_MA_CRASH), ("vmcoreinfo", abi.KEXEC_RANGE_MA_VMCOREINFO)):
        try:
            start, size = client.get_range(rid)
        except HypercallError:
            continue
        if size:
            kind = {"xen": "xen-image", "vmcoreinfo": "xenheap"}.get(name, name)
            regions.append(Region(name, kind, start, size))
    by_name = {r.name: r for r in regions}
    window = None
    if "lu-bootmem" in by_name and "xen" in by_name:
        lu, xen = by_name["lu-bootmem"], by_name["xen"]
        window = (lu.start, xen.end)
        regions.append(Region("breadcrumb", "breadcrumb", lu.start, PAGE_SIZE))
    runs = []
    try:
        runs = [Region(use, use, start, size)
                for start, size, use in client.transport.toolstack("memmap")]
    except USER_ERRORS:
        pass                         # real Xen: the named ranges are all there is
    after = None
    if plan is not None and plan.placement.kind == "liveupdate":
        p = plan.placement
        after = [Region("xen#2 LU bootmem", "new-bootmem", p.bootmem_start, p.bootmem_size),
                 Region("breadcrumb", "breadcrumb", p.breadcrumb_addr, PAGE_SIZE),
                 Region("boot info", "boot-info", p.bootinfo_addr, PAGE_SIZE),
                 Region("xen#2", "xen#2", p.image_start, p.image_end - p.image_start)]
    return MemoryMap(ram_size, regions, runs, window, after)


def _cells(lo, hi, width, layers):
    """For each of `width` cells covering [lo, hi), the kind with the most
    bytes in it, later layers painting over earlier ones; any region at all
    in a cell shows, however small (so to scale, except for that)."""
    span = max(hi - lo, 1)
    cells = [None] * width
    for layer in layers:
        best = [0] * width
        for r in layer:
            a, b = max(r.start, lo), min(r.end, hi)
            if a >= b:
                continue
            first, last = (a - lo) * width // span, min(width - 1, (b - 1 - lo) * width // span)
            for c in range(first, last + 1):
                c_lo, c_hi = lo + c * span // width, lo + (c + 1) * span // width
                got = min(b, c_hi) - max(a, c_lo)
                if got > best[c] or (got > 0 and cells[c] is None):
                    best[c] = max(got, 1)
                    cells[c] = r.kind
    return [c or "free" for c in cells]


def _rows(m):
    """(title, lo, hi, cells) rows of the picture."""
    base = m.runs or [Region("ram", "free", 0, m.ram_size)]
    # Page-sized markers go on top, so that they show however small.
    named = [r for r in m.regions if r.kind != "xenheap" and r.kind not in MARKERS]
    marks = [r for r in m.regions if r.kind in MARKERS]
    rows = [("RAM %s-%s" % (addr_text(0), addr_text(m.ram_size)), 0, m.ram_size, [base, named])]
    if m.window:
        lo, hi = m.window
        rows.append(("LU window %s-%s, now" % (addr_text(lo), addr_text(hi)), lo, hi, [base, named, marks]))
        if m.plan:
            rows.append(("after the update", lo, hi,
                         [[Region("", "free", lo, hi - lo)],
                          [r for r in m.plan if r.kind not in MARKERS],
                          [r for r in m.plan if r.kind in MARKERS]]))
    return rows


def render_text(m, width=72, colour=False):
    lines = []
    used = set()
    for title, lo, hi, layers in _rows(m):
        cells = _cells(lo, hi, width, layers)
        used.update(cells)
        if colour:
            bar = "".join("[%s]%s[/]" % (KINDS[c][1], KINDS[c][0]) for c in cells)
        else:
            bar = "".join(KINDS[c][0] for c in cells)
        lines.append("%s  (%s, %s a cell)" % (title, size_text(hi - lo), size_text((hi - lo) // width)))
        lines.append("|" + bar + "|")
    legend = ["%s %s" % (("[%s]%s[/]" % (KINDS[k][1], KINDS[k][0])) if colour else KINDS[k][0], k)
              for k in KINDS if k in used]
    lines.append("legend: " + "  ".join(legend))
    for heading, regions in _listed(m):
        lines.append(heading)
        lines += ["  %-18s %s-%s %s" % (r.name, addr_text(r.start), addr_text(r.end), size_text(r.size))
                  for r in regions]
    return lines


def _listed(m):
    """(heading, regions) for the list under the bars: what is there now,
    then what the update would place; each region once."""
    out = [("now:", m.regions)]
    if m.plan:
        out.append(("after the update:", m.plan))
    return out


def _flatten(lo, hi, layers):
    """The row as non-overlapping Regions over [lo, hi), each layer painted
    over the ones before: what the SVG draws, each byte once."""
    painted = []
    for layer in layers:
        for r in layer:
            a, b = max(r.start, lo), min(r.end, hi)
            if a >= b:
                continue
            kept = []
            for p in painted:
                if p.end <= a or p.start >= b:
                    kept.append(p)
                    continue
                if p.start < a:
                    kept.append(Region(p.name, p.kind, p.start, a - p.start))
                if p.end > b:
                    kept.append(Region(p.name, p.kind, b, p.end - b))
            kept.append(Region(r.name, r.kind, a, b - a))
            painted = sorted(kept, key=lambda x: x.start)
    return painted


def render_svg(m, width=1000):
    from xml.sax.saxutils import escape
    bar_h, gap, left = 28, 34, 10
    rows = _rows(m)
    height = 40 + len(rows) * (bar_h + gap) + 24 * (len(KINDS) // 6 + 1)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="monospace" '
           'font-size="12">' % (width + 2 * left, height)]
    y = 20
    used = set()
    for title, lo, hi, layers in rows:
        out.append('<text x="%d" y="%d">%s</text>' % (left, y - 4, escape(title)))
        span = max(hi - lo, 1)
        # Markers last: widened to be seen, they must not be painted over.
        for r in sorted(_flatten(lo, hi, layers), key=lambda r: r.kind in MARKERS):
            used.add(r.kind)
            x = left + (r.start - lo) * width / span
            w = max(r.size * width / span, 3 if r.kind in MARKERS else 0.5)
            out.append('<rect x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"><title>%s '
                       '%s-%s</title></rect>' % (x, y, w, bar_h, SVG_COLOURS[r.kind],
                                                 escape(r.name), addr_text(r.start), addr_text(r.end)))
        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>'
                   % (left, y, width, bar_h))
        y += bar_h + gap
    x = left
    for kind in KINDS:
        if kind not in used:
            continue
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>'
                   % (x, y, SVG_COLOURS[kind], x + 16, y + 11, escape(kind)))
        x += 150
        if x > width - 150:
            x, y = left, y + 20
    out.append("</svg>")
    return "\n".join(out) + "\n"
