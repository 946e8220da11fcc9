"""What the real Debian Xen images are, independently of our parser.

The facts the tests assert about Debian's `xen-hypervisor-4.17-amd64` (and its
-dbg `xen-syms`) change with every build Debian serves.  For the builds seen so
far they are written down here, keyed by package version, as read with binutils
and od; for a build not in the table they are read the same way at test time
(`read_facts`), so the parser is always checked against a second opinion and
never against itself.  A test proves the reader agrees with the table.
"""
import re
import shutil
import subprocess
import tempfile
from typing import NamedTuple, Tuple

MB2_MAGIC = 0xE85250D6
MB2_SEARCH = 32768          # multiboot2: the header lies in the image's first 32 KiB


class LoadSegment(NamedTuple):
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    perms: str


class Mb2Facts(NamedTuple):
    offset: int             # file offset of the header's magic in the ELF
    header_length: int
    tag_types: Tuple[int, ...]      # in order, the END tag (0) included
    reloc_offset: int       # file offset of the relocatable tag (type 10)
    relocatable: Tuple[int, int, int, int]   # min_addr, max_addr, align, preference
    requests: Tuple[int, ...]        # information-request tag (1)
    console_flags: int               # console-flags tag (4)
    framebuffer: Tuple[int, int, int]  # framebuffer tag (5): width, height, depth


class XenFacts(NamedTuple):
    deb_version: str
    version: Tuple[int, int, str]   # major, minor, extra as Xen prints them
    build_id: str
    entry: int
    gz_load: LoadSegment            # xen.gz's ELF32: one PT_LOAD, then PT_NOTE
    syms_load: LoadSegment          # xen-syms' ELF64: linked high, loaded low
    mb2: Mb2Facts
    syms_mb2_magic: int             # where the magic lies in xen-syms (too far to use)


_MB2_4_17 = Mb2Facts(offset=0x98, header_length=0x88, tag_types=(1, 6, 10, 4, 5, 7, 9, 0),
                     reloc_offset=0xC0, relocatable=(0x200000, 0xFFFFFFFF, 0x200000, 2),
                     requests=(4, 6), console_flags=2, framebuffer=(0, 0, 0))

# Read with `readelf -hlnW` and `od -t x4` from the packages as Debian serves them.
KNOWN = {f.deb_version: f for f in (
    XenFacts(deb_version="4.17.7+13-g2445b30a44-0+deb12u1",        # bookworm-security
             version=(4, 17, ".7"), build_id="151b373fd64b321593bf987fd923cd10dabadac4",
             entry=0x200000,
             gz_load=LoadSegment(0x80, 0x200000, 0x200000, 0x271920, 0x3A7000, "RWX"),
             syms_load=LoadSegment(0x8000, 0xFFFF82D040200000, 0x200000, 0x271920, 0x3A6140,
                                   "RWX"),
             mb2=_MB2_4_17, syms_mb2_magic=0x8018),
    XenFacts(deb_version="4.17.5+72-g01140da4e8-1",                 # bookworm 12.11
             version=(4, 17, ".5"), build_id="39a640e6f1412319235087391df9f1c5e13ae920",
             entry=0x200000,
             gz_load=LoadSegment(0x80, 0x200000, 0x200000, 0x292920, 0x3C8000, "RWX"),
             syms_load=LoadSegment(0x8000, 0xFFFF82D040200000, 0x200000, 0x292920, 0x3C7240,
                                   "RWX"),
             mb2=_MB2_4_17, syms_mb2_magic=0x8018),
)}


def facts_for(artifacts):
    """The table's facts for the cached build, else the ones read from it."""
    return KNOWN.get(artifacts.deb_version) or read_facts(artifacts)


# ---------------------------------------------------------------- the independent reading

class OracleError(Exception):
    pass


def _run(*argv, binary=False):
    if shutil.which(argv[0]) is None:
        raise OracleError("%s is not installed (binutils, coreutils, dpkg)" % argv[0])
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode:
        raise OracleError("%s failed: %s" % (" ".join(argv), proc.stderr.decode(errors="replace")))
    return proc.stdout if binary else proc.stdout.decode()


def _readelf(path):
    """Entry, the PT_LOAD segments and the GNU build-id, as binutils sees them."""
    out = _run("readelf", "-W", "-h", "-l", "-n", str(path))
    entry = int(re.search(r"Entry point address:\s+(0x[0-9a-f]+)", out).group(1), 16)
    loads = []
    for m in re.finditer(r"^\s+LOAD\s+(0x\S+)\s+(0x\S+)\s+(0x\S+)\s+(0x\S+)\s+(0x\S+)\s+"
                         r"([RWE ]{3})", out, re.M):
        flags = m.group(6)
        perms = "".join(c if c in flags else "-" for c in "RW") + ("X" if "E" in flags else "-")
        loads.append(LoadSegment(*(int(m.group(i), 16) for i in range(1, 6)), perms))
    build_id = re.search(r"Build ID:\s+([0-9a-f]+)", out).group(1)
    return entry, loads, build_id


def _words(path, count):
    """The first `count` bytes of a file as little-endian u32 words, through od."""
    out = _run("od", "-A", "n", "-v", "-t", "x4", "--endian=little", "-N", str(count), str(path))
    return [int(w, 16) for w in out.split()]


def _mb2(path):
    words = _words(path, MB2_SEARCH)
    for i in range(0, len(words) - 3, 2):           # 8-byte aligned, as the spec says
        if words[i] == MB2_MAGIC:
            break
    else:
        return None
    offset, length = 4 * i, words[i + 2]
    tags, bodies, pos = [], {}, offset + 16
    while pos < offset + length:
        w = pos // 4
        tag_type, size = words[w] & 0xFFFF, words[w + 1]
        tags.append(tag_type)
        bodies[tag_type] = (pos, words[w + 2:w + size // 4])
        if tag_type == 0 or size < 8:
            break
        pos += (size + 7) & ~7
    reloc_off, reloc = bodies[10]
    return Mb2Facts(offset=offset, header_length=length, tag_types=tuple(tags),
                    reloc_offset=reloc_off, relocatable=tuple(reloc[:4]),
                    requests=tuple(bodies[1][1]), console_flags=bodies[4][1][0],
                    framebuffer=tuple(bodies[5][1][:3]))


def _magic_offset(path, count=4 * MB2_SEARCH):
    words = _words(path, count)
    hits = [4 * i for i in range(0, len(words), 2) if words[i] == MB2_MAGIC]
    return hits[0] if hits else None


def _deb_version(artifacts):
    debs = sorted((artifacts.root.parent / "debs").glob("xen-hypervisor-4.17-amd64_*.deb"))
    if not debs:
        raise OracleError("no xen-hypervisor-4.17-amd64 .deb beside %s" % artifacts.root)
    return _run("dpkg-deb", "-f", str(debs[-1]), "Version").strip()


def _upstream_version(deb_version):
    """'4.17.7+13-g2445b30a44-0+deb12u1' -> (4, 17, '.7'): Debian's version
    starts with Xen's own major.minor.extra."""
    m = re.match(r"(?:\d+:)?(\d+)\.(\d+)((?:\.\d+)?)", deb_version)
    if not m:
        raise OracleError("cannot read Xen's version from %r" % deb_version)
    return int(m.group(1)), int(m.group(2)), m.group(3)


def read_facts(artifacts):
    """Every fact of XenFacts, from binutils, od and dpkg-deb alone."""
    with tempfile.NamedTemporaryFile(suffix=".elf") as elf:
        elf.write(_run("gzip", "-dc", str(artifacts.xen_gz), binary=True))
        elf.flush()
        entry, gz_loads, build_id = _readelf(elf.name)
        mb2 = _mb2(elf.name)
    syms_entry, syms_loads, syms_build_id = _readelf(artifacts.xen_syms)
    if (syms_entry, syms_build_id) != (entry, build_id):
        raise OracleError("xen.gz and xen-syms are not one build (%s, %s)"
                          % (build_id, syms_build_id))
    deb_version = _deb_version(artifacts)
    return XenFacts(deb_version=deb_version, version=_upstream_version(deb_version),
                    build_id=build_id, entry=entry, gz_load=gz_loads[0],
                    syms_load=syms_loads[0], mb2=mb2,
                    syms_mb2_magic=_magic_offset(artifacts.xen_syms))

