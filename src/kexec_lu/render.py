"""How kexec-lu shows what its actions return: an image's facts, the ranges,
a load plan, a live update's progress.  Both kexec-lu's subcommands and
kexec's spellings (with -d, on stderr) use these; file is stdout unless
given."""
import os
import sys

from cli_common import print_fields, print_table
from xen_public import abi
from xen_public.units import addr_text, count, size_text


def image_info(img):
    data = img.to_json()
    reloc = img.relocatable
    lu = data["live_update"]
    print_fields([
        ("file", data["path"]),
        ("format", data["format"]),
        ("class", "ELF%d" % img.elf_class),
        ("machine", img.machine),
        ("entry", addr_text(img.entry)),
        ("load address", "%s-%s" % (addr_text(img.load_start), addr_text(img.load_end))),
        ("load size", "%s (%d bytes)" % (size_text(img.load_size), img.load_size)),
        ("multiboot2", "header at file offset 0x%x" % img.mb2.offset if img.mb2 else "none"),
        ("relocatable", "min %s max %s align %s prefer %s" % (
            addr_text(reloc.min_addr), addr_text(reloc.max_addr), size_text(reloc.align), reloc.preference_name)
         if reloc else "no"),
        ("build-id", img.build_id or "none"),
        ("xen version", "%s (from %s)" % (img.xen_version, img.xen_version.source)
         if img.xen_version else "unknown"),
        ("live update", "stream versions %d-%d, %d record types" % (
            lu["stream_versions"][0], lu["stream_versions"][1], len(lu["record_types"]))
         if lu else "no (the image advertises no live-update restore support)"),
    ])


def ranges_json(rows):
    return [{"name": n, "range": r, "nr": nr, "start": s, "size": z,
             "available": not err, "error": os.strerror(err) if err else None}
            for n, r, nr, s, z, err in rows]


def ranges_table(rows):
    table = []
    for name, rid, nr, start, size, err in rows:
        label = "%s %d" % (name, nr) if rid == abi.KEXEC_RANGE_MA_CPU else name
        if err:
            table.append([label, rid, "-", "-", "not available (%s)" % os.strerror(err)])
        else:
            table.append([label, rid, addr_text(start), addr_text(start + size) if size else "-",
                          size_text(size) if size else "0 (none)"])
    print_table(["range", "id", "start", "end", "size"], table)


def _cmdline_changes(plan):
    """A live update's row saying how xen#2's command line differs from
    the running hypervisor's."""
    changes = plan.cmdline_changes()
    if changes is None:
        return []
    added, dropped = changes
    words = ["+" + w for w in added] + ["-" + w for w in dropped]
    return [("vs running Xen", " ".join(words) if words else "(the same)")]


def plan(plan, loaded, file=None):
    p = plan.placement
    rows = [("type", abi.KEXEC_TYPE_NAMES[plan.ktype])]
    if p.kind == "liveupdate":
        rows += [
            ("window", "%s-%s (%s)" % (addr_text(p.region_start), addr_text(p.region_end),
                                       size_text(p.region_end - p.region_start))),
            ("xen#2 image", "%s-%s" % (addr_text(p.image_start), addr_text(p.image_end))),
            ("xen#2 LU bootmem", "%s-%s (%s)" % (addr_text(p.bootmem_start),
                                                 addr_text(p.bootmem_start + p.bootmem_size),
                                                 size_text(p.bootmem_size))),
            ("breadcrumb page", addr_text(p.breadcrumb_addr)),
        ]
    else:
        rows += [("region", "%s-%s" % (addr_text(p.region_start), addr_text(p.region_end))),
                 ("image", "%s-%s" % (addr_text(p.image_start), addr_text(p.image_end)))]
    rows += [
        ("boot info page", addr_text(p.bootinfo_addr)),
        ("entry", "%s -> image entry %s" % (addr_text(plan.entry), addr_text(plan.eip))),
        ("command line", plan.cmdline or "(empty)"),
        *_cmdline_changes(plan),
        ("segments", ", ".join("%s (%s)" % (addr_text(d), size_text(ds)) for _, d, ds in plan.segments)),
        ("result", "loaded" if loaded else "not loaded (--dry-run)"),
    ]
    print_fields(rows, title="load plan", file=file)


def preflight(result, file=None):
    """kexec-lu check: the verdict, then what the update carries and what
    its quiesce would wait for."""
    if result["error"]:
        verdict = "refused: %s" % result["error"]
    elif not result["ready"]:
        verdict = "would not complete: a vCPU waits on something that cannot answer"
    else:
        verdict = "ready: live update %s -> %s" % (result["from_version"], result["to_version"])
    rows = [("pre-flight", verdict)]
    if result.get("crash_image") == "to carry":
        rows.append(("carries", "the loaded crash image"))
    if result.get("reboot_image") == "not carried":
        rows.append(("not carried", "the loaded reboot image (load it again after the update)"))
    for w in result["waiting"]:
        rows.append(("blocks" if w["blocks"] else "in flight",
                     "vCPU %d of d%d (%s): %s" % (w["vcpu"], w["domid"], w["name"], w["waits_for"])))
    print_fields(rows, file=file)


class LiveUpdateProgress:
    """Each phase of a live update as it ends, then the outcome: styled on a
    terminal, plain text when piped."""

    def __init__(self, file=None):
        from rich.console import Console
        self.out = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)

    def triggered(self):
        self.out.print("live update triggered (Xen reports its progress on its console)")

    def started(self, first, crash_loaded=False, reboot_loaded=False):
        self.out.print("[bold]live update %s -> %s[/bold]" % (first.get("from_version") or "?",
                                                              first.get("to_version") or "?"))
        if crash_loaded:
            self.out.print("  carries the loaded crash image")
        if reboot_loaded:
            self.out.print("  does not carry the loaded reboot image (it lives in xen#1's heap): "
                           "load it again after the update")

    def phase(self, p):
        # One 26-column field: a longer name (frametable-deferred) leaves
        # the number less room, so the columns stay put.
        width = max(16, len(p["name"]))
        self.out.print("  %-*s %*.2f ms" % (width, p["name"], 25 - width, p["ms"]))

    def finished(self, rep):
        from rich.markup import escape
        if rep["state"] == "complete":
            self.out.print("[green]complete[/green]: Xen %s -> %s, blackout %.2f ms, %s, %s stream"
                           % (rep.get("from_version"), rep.get("to_version"), rep.get("blackout_ms", 0.0),
                              count(rep.get("restored_domains", 0), "domain"),
                              size_text(rep.get("stream_bytes", 0))))
            for dev in rep.get("devices", []):
                self.out.print("device %s: %s of DMA during the blackout, longest stall %.2f ms, %s dropped "
                               "for a full ring, %s held"
                               % (dev["bdf"], count(dev["dma_ops_in_blackout"], "round"), dev["max_dma_stall_ms"],
                                  count(dev["dropped"], "packet"), count(dev["interrupts_held"], "interrupt")))
            if rep.get("crash_image") == "carried":
                self.out.print("crash image: carried over, still loaded")
            elif rep.get("crash_image") == "dropped":
                self.out.print("[red]crash image: dropped[/red]: %s" % escape(rep.get("crash_image_why", "")))
        # A failed update's reason is the one error line on stderr
        # (actions.require_done), not repeated here.
