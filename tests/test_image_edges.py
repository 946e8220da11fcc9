"""kexec_lu.image at its edges: each limit on both sides, the exact one-line
refusals, and the shapes a real Xen build never has (program headers in any
order, code at the very end of a segment, decoy compile banners).

Expected values are literals, or bytes built here by hand (struct, gzip,
zlib); the big limits (256 MiB files, 256 MiB decompressed, 65536 gzip
members, 1 GiB of segments) are tested at their real values with sparse
files, repeated gzip members and segments that are large only in memsz.
"""
import contextlib
import dataclasses
import gzip
import os
import signal
import struct
import zlib

import pytest

from kexec_lu import image as imagemod
from kexec_lu.errors import ImageError
from kexec_lu.image import load_image, parse_image, probe, version_from_banner
from test_image import patch_ehdr, patch_phdr, small_image
from test_image_fuzz import LINK, CountingZlib, _CountingDecompressor, synthetic_elf

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
PT_LOAD, PT_GNU_STACK = 1, 0x6474E551


def refused_with(data, message, path="img"):
    """parse_image(data) fails with exactly "PATH: message"."""
    with pytest.raises(ImageError) as e:
        parse_image(data, path)
    assert str(e.value) == "%s: %s" % (path, message)


def refused_starting(data, prefix, path="img"):
    """Fails with one line "PATH: prefix..." whose rest (pyelftools' own
    words) says something."""
    with pytest.raises(ImageError) as e:
        parse_image(data, path)
    msg = str(e.value)
    assert msg.startswith("%s: %s" % (path, prefix)) and "\n" not in msg, msg
    assert msg[len(path) + 2 + len(prefix):].strip(), msg


def probed(path):
    """probe()'s answer: the format, or its one-line refusal without the path."""
    try:
        return probe(path)
    except ImageError as e:
        msg = str(e)
        assert msg.startswith("%s: " % path) and "\n" not in msg, msg
        return msg[len(str(path)) + 2:]


def sparse_file(path, size, head=b""):
    """A file of `size` bytes that starts with `head`; the rest is a hole."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


@contextlib.contextmanager
def fails_instead_of_hanging(what, seconds=10):
    """A call that blocks (open() of a FIFO nobody writes to) raises here
    instead of hanging the run: a guard, not a measurement."""
    def expire(signum, frame):
        raise AssertionError("%s still blocked after %d s" % (what, seconds))
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- reading files

ELF64_IDENT = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HH", 2, 62)  # 20 bytes: x86-64


def test_a_file_of_exactly_256_mib_is_read_one_byte_more_is_refused(tmp_path):
    # At the limit the file is read and its content judged (a hole is no ELF).
    at = sparse_file(tmp_path / "at", 256 * MiB)
    with pytest.raises(ImageError) as e:
        load_image(at)
    assert str(e.value) == "%s: not an ELF image (starts with 00 00 00 00)" % at
    over = sparse_file(tmp_path / "over", 256 * MiB + 1)
    with pytest.raises(ImageError) as e:
        load_image(over)
    assert str(e.value) == ("%s: file is 256 MiB, larger than any Xen image (limit 256 MiB)"
                            % over)


def test_probe_reads_the_head_of_a_file_too_large_to_load(tmp_path):
    """probe() reads 64 KiB at most: it names the format of any file, even
    one load_image() refuses for its size."""
    big = sparse_file(tmp_path / "big.elf", 256 * MiB + 1, head=ELF64_IDENT)
    assert probed(big) == "elf64"


def test_a_missing_file_says_why_in_words(tmp_path):
    missing = tmp_path / "nope.gz"
    for fn in (load_image, probe):
        with pytest.raises(ImageError) as e:
            fn(missing)
        assert str(e.value) == "%s: cannot read: No such file or directory" % missing


def test_a_read_error_of_a_regular_file_is_one_line():
    # /proc/self/mem is a regular file whose offset 0 is unmapped: read() fails with EIO.
    for fn in (load_image, probe):
        with pytest.raises(ImageError) as e:
            fn("/proc/self/mem")
        assert str(e.value) == "/proc/self/mem: cannot read: Input/output error"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for fn in (load_image, probe):
        with fails_instead_of_hanging("opening a FIFO with no writer"):
            with pytest.raises(ImageError) as e:
                fn(fifo)
        assert str(e.value) == ("%s: cannot read: not a regular file (an image is read "
                                "from a file)" % fifo)


def test_file_size_is_what_was_read_or_what_the_caller_says(tmp_path):
    elf = small_image()
    assert parse_image(elf).file_size == len(elf)
    assert parse_image(elf, file_size=12345).file_size == 12345
    gz = small_image(gzip=True)
    p = tmp_path / "xen.gz"
    p.write_bytes(gz)
    assert load_image(p).file_size == len(gz)


# ---------------------------------------------------------------- gzip

ONE_MIB_OF_ZEROS_GZ = gzip.compress(bytes(MiB), mtime=0)
EMPTY_MEMBER = gzip.compress(b"", mtime=0)


def stored_gzip(payload):
    """One gzip member holding payload in stored (uncompressed) deflate blocks."""
    c = zlib.compressobj(0, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(payload) + c.flush()


def test_exactly_256_mib_decompressed_is_read_one_byte_more_is_a_bomb():
    at_limit = ONE_MIB_OF_ZEROS_GZ * 256
    refused_with(at_limit, "not an ELF image (starts with 00 00 00 00)")
    refused_with(at_limit + gzip.compress(b"\0", mtime=0),
                 "decompresses to more than 256 MiB; not a Xen image (gzip bomb?)")


def test_65536_gzip_members_are_read_one_more_is_refused():
    # A real image, then empty members: gzip(1) reads them all as one file.
    at_limit = small_image(gzip=True) + EMPTY_MEMBER * 65535
    img = parse_image(at_limit)
    assert img.compressed and str(img.xen_version) == "4.18.0"
    assert img.elf_bytes == small_image()
    refused_with(at_limit + EMPTY_MEMBER, "more than 65536 gzip members; not a Xen image")


class _BlockLog(CountingZlib):
    """zlib as kexec_lu.image uses it, logging the size of each block handed
    to decompress(), one list per gzip member."""

    def __init__(self):
        super().__init__()
        self.blocks = []

    def decompressobj(self, wbits):
        self.decompressors += 1
        self.blocks.append([])
        return _LoggedDecompressor(zlib.decompressobj(wbits), self)


class _LoggedDecompressor(_CountingDecompressor):
    def decompress(self, data, max_length=0):
        assert len(data), "an empty block makes no progress (a loop that never ends)"
        self._counts.blocks[-1].append(len(data))
        return super().decompress(data, max_length)


def test_the_first_member_goes_to_zlib_whole_later_ones_64_kib_at_a_time(monkeypatch):
    """A plain xen.gz is decompressed in one call (one buffer, never copied
    again); a later member is handed over 64 KiB at a time, so what zlib
    gives back after a member ends is a block at most, not the rest of the
    file (which made many small members cost quadratic time)."""
    elf = small_image(text_size=192 * KiB, mem_size=256 * KiB)
    first, rest = gzip.compress(elf[:100], mtime=0), stored_gzip(elf[100:])
    assert len(rest) > 3 * 64 * KiB
    log = _BlockLog()
    monkeypatch.setattr(imagemod, "zlib", log)
    img = parse_image(first + rest)
    assert img.elf_bytes == elf
    assert log.blocks == [[len(first) + len(rest)],
                          [64 * KiB, 64 * KiB, 64 * KiB, len(rest) - 3 * 64 * KiB]]


def test_decompression_stops_one_byte_past_the_limit(monkeypatch):
    """However the output is split among members, zlib is asked for no more
    than one byte past the limit, then the file is refused.  The limit is
    lowered to 1 MiB (a tunable here; its real value is tested above)."""
    counts = CountingZlib()
    monkeypatch.setattr(imagemod, "zlib", counts)
    monkeypatch.setattr(imagemod, "MAX_DECOMPRESSED", MiB)
    data = gzip.compress(bytes(600 * KiB), mtime=0) + gzip.compress(bytes(4 * MiB), mtime=0)
    refused_with(data, "decompresses to more than 1 MiB; not a Xen image (gzip bomb?)")
    assert counts.bytes_out == MiB + 1


def test_a_cut_gzip_says_how_much_it_decompressed():
    # Everything but the 8-byte trailer (CRC32, size): all 1000 bytes come out.
    refused_with(gzip.compress(b"x" * 1000, mtime=0)[:-8],
                 "truncated gzip data (stream ends after 1000 bytes decompressed)")


# ---------------------------------------------------------------- probe

def gzip_with_comment(comment_len, payload):
    """A gzip member (RFC 1952) with an FCOMMENT of comment_len bytes before
    its data, which is one stored deflate block: payload byte k is file byte
    10 + comment_len + 1 + 5 + k."""
    header = struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0x10, 0, 0, 255)
    block = struct.pack("<BHH", 1, len(payload), len(payload) ^ 0xFFFF) + payload
    return (header + b"c" * comment_len + b"\0" + block
            + struct.pack("<II", zlib.crc32(payload), len(payload)))


@pytest.mark.parametrize("comment_len, answer", [
    (65500, "gzip+elf64"),                        # 20 ELF bytes within the first 64 KiB
    (65501, "ELF header truncated (19 bytes)"),   # 19: the 20th is byte 65536
])
def test_probe_decompresses_only_from_the_first_64_kib(tmp_path, comment_len, answer):
    p = tmp_path / "xen.gz"
    p.write_bytes(gzip_with_comment(comment_len, ELF64_IDENT + bytes(44)))
    assert gzip.decompress(p.read_bytes()) == ELF64_IDENT + bytes(44)   # a valid gzip file
    assert probed(p) == answer


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\x1f\x8b", "corrupt gzip data"),                           # magic, nothing after
    (b"\x1f\x8b\x07\x00" + bytes(16), "corrupt gzip data"),       # method 7: zlib refuses
    (b"\x00\x01\x02\x03hello", "not an ELF image (starts with 00 01 02 03)"),
    (ELF64_IDENT[:19], "ELF header truncated (19 bytes)"),
])
def test_probe_refusals(tmp_path, content, message):
    p = tmp_path / "image"
    p.write_bytes(content)
    assert probed(p) == message


def test_probe_needs_only_the_first_20_bytes(tmp_path):
    p = tmp_path / "head"
    p.write_bytes(ELF64_IDENT)
    assert probed(p) == "elf64"


# ---------------------------------------------------------------- ELF header

def test_identification_edges():
    refused_with(b"\x00\x01\x02\x03hello", "not an ELF image (starts with 00 01 02 03)")
    refused_with(ELF64_IDENT[:19], "ELF header truncated (19 bytes)")
    # 20 bytes identify an ELF64 x86-64 image; its 64-byte header is still cut.
    refused_with(ELF64_IDENT, "ELF header truncated (20 of 64 bytes)")


@pytest.mark.parametrize("elf_class, ehsize", [(32, 52), (64, 64)])
def test_elf_header_sizes_are_exact(elf_class, ehsize):
    elf = small_image(elf_class=elf_class)
    refused_with(elf[:ehsize - 1], "ELF header truncated (%d of %d bytes)" % (ehsize - 1, ehsize))
    # The whole header and nothing else: the program headers are what is missing.
    refused_with(elf[:ehsize], "program headers at 0x%x (2 x %d bytes) run past end of file "
                 "(0x%x bytes)" % (ehsize, {32: 32, 64: 56}[elf_class], ehsize))


# ---------------------------------------------------------------- program headers

def elf32_program_header(ptype, offset=0, vaddr=0, paddr=0, filesz=0, memsz=0, flags=0):
    return struct.pack("<8I", ptype, offset, vaddr, paddr, filesz, memsz, flags, 0)


def original_headers(elf):
    """An ELF32 small_image()'s two program headers [PT_LOAD, PT_NOTE], as
    bytes: 32 each, right after the 52-byte ELF header."""
    return [elf[52:84], elf[84:116]]


def with_program_headers(elf, headers):
    """elf with its program header table replaced by `headers`, placed at the
    very end of the file."""
    return patch_ehdr(elf, phoff=len(elf), phnum=len(headers)) + b"".join(headers)


def test_program_headers_may_end_exactly_at_the_end_of_the_file():
    elf = small_image()
    moved = with_program_headers(elf, original_headers(elf))
    img = parse_image(moved)
    assert [(s.index, s.paddr, s.memsz) for s in img.segments] == [(0, 0x200000, 0x20000)]
    refused_with(moved[:-1], "program headers at 0x%x (2 x 32 bytes) run past end of file "
                 "(0x%x bytes)" % (len(elf), len(moved) - 1))


def test_headers_that_load_nothing_may_come_first():
    """Only PT_LOAD with memory is loaded, wherever the others sit in the
    table: a PT_GNU_STACK, the PT_NOTE and an empty PT_LOAD before the real
    one, a one-byte PT_LOAD after it."""
    elf = small_image()
    load, note = original_headers(elf)
    headers = [elf32_program_header(PT_GNU_STACK, flags=6),
               note,
               elf32_program_header(PT_LOAD, offset=0x80, vaddr=0x100000, paddr=0x100000),
               load,
               elf32_program_header(PT_LOAD, offset=0x80, vaddr=0x300000, paddr=0x300000,
                                    filesz=1, memsz=1, flags=4)]
    img = parse_image(with_program_headers(elf, headers))
    assert [(s.index, s.paddr, s.memsz) for s in img.segments] == \
        [(3, 0x200000, 0x20000), (4, 0x300000, 1)]
    assert (img.load_start, img.load_end) == (0x200000, 0x300001)
    gnu = elf.index(b"GNU\0")                                # the PT_NOTE was read
    assert img.build_id == elf[gnu + 4:gnu + 24].hex()


def test_segment_data_may_end_exactly_at_the_end_of_the_file():
    # No section headers: the file ends with the text segment (0x80 + 64 KiB).
    elf = patch_ehdr(small_image(), shoff=0, shnum=0)[:0x10080]
    assert parse_image(elf).segments[0].data == small_image()[0x80:0x10080]
    refused_with(elf[:-1], "segment 0 (PT_LOAD) data at 0x80+0x10000 runs past end of file "
                 "(0x1007f bytes)")


def test_an_elf32_segment_may_end_exactly_at_4_gib():
    elf = patch_ehdr(small_image(), entry=0xFFFE0000)
    img = parse_image(patch_phdr(elf, 0, paddr=0xFFFE0000, vaddr=0xFFFE0000))
    assert (img.load_start, img.load_end, img.entry) == (0xFFFE0000, 1 << 32, 0xFFFE0000)
    refused_with(patch_phdr(elf, 0, paddr=0xFFFE0001, vaddr=0xFFFE0001),
                 "segment 0 (PT_LOAD) at paddr 0xfffe0001+0x20000 runs past 4 GiB")


def test_one_segment_may_be_1_gib_not_a_byte_more():
    img = parse_image(patch_phdr(small_image(), 0, memsz=GiB))
    assert (img.load_start, img.load_size) == (0x200000, GiB)
    refused_with(patch_phdr(small_image(), 0, memsz=GiB + 1),
                 "segment 0 (PT_LOAD) memsz 0x40000001 is more than 1024 MiB")


def test_segments_may_total_1_gib_not_a_byte_more():
    # Two contiguous segments: 768 MiB, then 256 MiB (+1).
    elf = patch_phdr(small_image(), 0, memsz=0x30000000)
    second = dict(type=PT_LOAD, paddr=0x30200000, vaddr=0x30200000)
    img = parse_image(patch_phdr(elf, 1, memsz=0x10000000, **second))
    assert (img.load_start, img.load_end, img.load_size) == (0x200000, 0x40200000, GiB)
    refused_with(patch_phdr(elf, 1, memsz=0x10000001, **second),
                 "PT_LOAD segments total 0x40000001 bytes, more than 1024 MiB")


def test_segments_may_span_1_gib_not_a_byte_more():
    # 128 KiB at 2 MiB, 4 KiB ending exactly 1 GiB above (or a byte further).
    elf = patch_phdr(small_image(), 1, type=PT_LOAD, memsz=0x1000)
    end = 0x200000 + GiB
    img = parse_image(patch_phdr(elf, 1, paddr=end - 0x1000, vaddr=end - 0x1000))
    assert (img.load_start, img.load_end, img.load_size) == (0x200000, end, GiB)
    refused_with(patch_phdr(elf, 1, paddr=end - 0xFFF, vaddr=end - 0xFFF),
                 "PT_LOAD segments span 0x40000001 bytes (0x200000-0x40200001), "
                 "more than 1024 MiB")


def test_segments_may_touch_not_overlap():
    elf = patch_phdr(small_image(), 1, type=PT_LOAD)     # the notes, loaded elsewhere
    img = parse_image(patch_phdr(elf, 1, paddr=0x220000, vaddr=0x220000))
    assert [(s.index, s.paddr) for s in img.segments] == [(0, 0x200000), (1, 0x220000)]
    refused_with(patch_phdr(elf, 1, paddr=0x21FFFF, vaddr=0x21FFFF),
                 "segments 0 and 1 overlap at paddr 0x21ffff")


@pytest.mark.parametrize("flags, perms", [(0, "---"), (1, "--X"), (2, "-W-"), (4, "R--"),
                                          (5, "R-X"), (6, "RW-"), (7, "RWX")])
def test_segment_permissions(flags, perms):
    elf = bytearray(small_image())
    struct.pack_into("<I", elf, 52 + 24, flags)          # ELF32 p_flags of program header 0
    [seg] = parse_image(bytes(elf)).segments
    assert (seg.flags, seg.perms, seg.to_dict()["perms"]) == (flags, perms, perms)


# ---------------------------------------------------------------- entry point

def test_physical_entry_at_the_last_byte_of_a_segment_not_past_it():
    elf = small_image()                                  # [0x200000, 0x220000)
    assert parse_image(patch_ehdr(elf, entry=0x21FFFF)).entry == 0x21FFFF
    refused_with(patch_ehdr(elf, entry=0x220000),
                 "entry point 0x220000 is outside every PT_LOAD segment")


def test_virtual_entry_at_both_ends_of_a_segment():
    elf = small_image(elf_class=64)                      # vaddr 0xffff82d040200000
    assert parse_image(patch_ehdr(elf, entry=0xFFFF82D040200000)).entry == 0x200000
    assert parse_image(patch_ehdr(elf, entry=0xFFFF82D04021FFFF)).entry == 0x21FFFF
    refused_with(patch_ehdr(elf, entry=0xFFFF82D040220000),
                 "entry point 0xffff82d040220000 is outside every PT_LOAD segment")


# ---------------------------------------------------------------- notes

BUILD_ID = bytes(range(0xA0, 0xB4))
GNU_ABI_TAG = (b"GNU", 1, struct.pack("<4I", 0, 3, 2, 0))    # NT_GNU_ABI_TAG: Linux 3.2.0
XENLU_VERSION = (b"XenLU", 1, struct.pack("<II", 4, 19) + b".1\0")


def test_other_gnu_notes_are_neither_build_id_nor_xenlu():
    """A GNU note of type 1 (ABI tag) is not the build-id (type 3), nor the
    XenLU version note, which has the same type number."""
    img = parse_image(bytes(synthetic_elf(64, notes=[GNU_ABI_TAG, (b"GNU", 3, BUILD_ID),
                                                     XENLU_VERSION]).buf))
    assert img.build_id == BUILD_ID.hex()
    v = img.xen_version
    assert (v.major, v.minor, v.extra, v.source) == (4, 19, ".1", "note")


def test_an_empty_build_id_note_is_no_build_id():
    img = parse_image(bytes(synthetic_elf(64, notes=[(b"GNU", 3, b"")]).buf))
    assert img.build_id is None and img.to_json()["build_id"] is None


# ---------------------------------------------------------------- version from symbols

class Syms:
    """synthetic_elf() with no notes, so that the version comes from the
    bodies of xen_{major,minor,extra}_version (4, 19, ".1"; its compile
    banner says 4.19.1 too), and ways to change them."""

    SYMBOL = {"major": "sym1.st_value", "minor": "sym2.st_value", "extra": "sym3.st_value"}

    def __init__(self, elf_class=64):
        self.layout = synthetic_elf(elf_class, notes=[])
        self.buf = bytearray(self.layout.buf)
        self.fields = {name: (off, fmt) for name, off, fmt, _ in self.layout.fields}

    def field(self, name):
        off, fmt = self.fields[name]
        return struct.unpack_from("<" + fmt, self.buf, off)[0]

    def set(self, name, value):
        off, fmt = self.fields[name]
        struct.pack_into("<" + fmt, self.buf, off, value)

    def function(self, what):
        """The virtual address of xen_<what>_version."""
        return self.field(self.SYMBOL[what])

    def text_end(self):
        """The virtual address just past the text segment's file bytes."""
        return self.field("ph0.p_vaddr") + self.field("ph0.p_filesz")

    def put(self, vaddr, data, segment=0):
        p = "ph%d." % segment
        off = self.field(p + "p_offset") + vaddr - self.field(p + "p_vaddr")
        self.buf[off:off + len(data)] = data

    def move(self, what, vaddr, code):
        """xen_<what>_version becomes `code` at vaddr (in the text segment)."""
        self.put(vaddr, code)
        self.set(self.SYMBOL[what], vaddr)

    def lea_to(self, vaddr):
        """xen_extra_version's lea, retargeted at vaddr."""
        at = self.function("extra")
        self.put(at + 3, struct.pack("<i", vaddr - (at + 7)))

    def version(self):
        v = parse_image(bytes(self.buf)).xen_version
        return (v.major, v.minor, v.extra, v.source)


def test_the_symbols_as_built_are_read():
    assert Syms(32).version() == Syms(64).version() == (4, 19, ".1", "symbols")


def test_xor_eax_eax_returns_zero():
    s = Syms()
    s.put(s.function("minor"), b"\x31\xc0\xc3")             # xor %eax, %eax; ret
    assert s.version() == (4, 0, ".1", "symbols")


@pytest.mark.parametrize("what, code", [
    ("major", b"\xc3"),                                     # ret: no mov, no xor
    ("minor", b"\x90\xb8\x13\x00\x00\x00\xc3"),             # nop first
    ("extra", b"\x48\x8b\x05"),                             # mov disp32(%rip), %rax: no lea
])
def test_code_that_is_not_the_expected_instruction_falls_back_to_the_banner(what, code):
    s = Syms()
    s.put(s.function(what), code)
    assert s.version() == (4, 19, ".1", "banner")


def test_an_instruction_cut_by_the_end_of_the_segment_is_not_read():
    """mov $imm32 needs 5 bytes, lea disp32(%rip) 7: one byte fewer in the
    segment's file bytes and the function is not decoded."""
    s = Syms()
    s.move("major", s.text_end() - 4, b"\xb8\x07\x00\x00")
    assert s.version() == (4, 19, ".1", "banner")
    s = Syms()
    s.move("major", s.text_end() - 5, b"\xb8\x07\x00\x00\x00")
    assert s.version() == (7, 19, ".1", "symbols")
    s = Syms()
    s.move("extra", s.text_end() - 6, b"\x48\x8d\x05\x00\x00\x00")
    assert s.version() == (4, 19, ".1", "banner")


def test_a_function_at_the_start_of_the_next_segment():
    """Two PT_LOADs back to back in virtual memory: an address just past the
    first one's file bytes is read from the second."""
    s = Syms()
    end = s.text_end()
    s.set("ph0.p_memsz", s.field("ph0.p_filesz"))           # no bss between them
    s.set("ph1.p_vaddr", end)
    s.set("ph1.p_paddr", LINK + s.field("ph0.p_filesz"))
    s.put(end, b"\xb8\x07\x00\x00\x00\xc3", segment=1)
    s.set(s.SYMBOL["major"], end)
    assert s.version() == (7, 19, ".1", "symbols")


@pytest.mark.parametrize("length, read", [(63, True), (64, False)])
def test_the_extra_version_is_read_up_to_64_bytes_with_its_nul(length, read):
    s = Syms()
    extra = b"-" + b"x" * (length - 1)
    s.put(s.field("ph0.p_vaddr") + 0x1000, extra + b"\0")
    s.lea_to(s.field("ph0.p_vaddr") + 0x1000)
    assert s.version() == ((4, 19, extra.decode(), "symbols") if read
                           else (4, 19, ".1", "banner"))


def test_a_non_ascii_extra_version_falls_back_to_the_banner():
    s = Syms()
    s.put(s.field("ph0.p_vaddr") + 0x1000, b"-\xff\0")
    s.lea_to(s.field("ph0.p_vaddr") + 0x1000)
    assert s.version() == (4, 19, ".1", "banner")


def test_a_symtab_section_that_is_no_symbol_table_is_ignored():
    s = Syms()
    s.set("sh2.sh_type", 1)                                 # SHT_PROGBITS
    assert s.version() == (4, 19, ".1", "banner")


def test_corrupt_section_and_symbol_tables_are_one_line():
    s = Syms()
    s.set("sh2.sh_entsize", 0)
    refused_starting(bytes(s.buf), "corrupt section headers: ")
    s = Syms()
    s.set("sh2.sh_offset", 0x7FFFFFFF)                      # symbols far past the end
    refused_starting(bytes(s.buf), "corrupt symbol table: ")


def test_a_dynamic_segment_over_corrupt_sections_is_one_line():
    # pyelftools reads the section table to make a PT_DYNAMIC segment.
    s = Syms()
    s.set("ph1.p_type", 2)                                  # PT_DYNAMIC
    s.set("sh2.sh_entsize", 0)
    refused_starting(bytes(s.buf), "corrupt program headers: ")


# ---------------------------------------------------------------- version from banner

# A version string 1.2.3 whose major.minor+extra make 1.2.9: it disagrees with itself.
DECOY = b"\x001.2.3\0gcc (decoy) 1.0\0.9\0"
BANNER = b"4.19.2+3\0x86_64-linux-gnu-gcc (Debian 12.2.0) 12.2.0\0.2\0"


def banner_version(data):
    v = version_from_banner(data)
    return v and (v.major, v.minor, v.extra, v.source)


def test_a_banner_that_agrees_with_itself_is_preferred():
    assert banner_version(DECOY + BANNER) == (4, 19, ".2", "banner")
    assert banner_version(BANNER + DECOY) == (4, 19, ".2", "banner")


def test_without_an_agreeing_banner_the_first_one_is_taken():
    assert banner_version(DECOY) == (1, 2, ".9", "banner")
    assert banner_version(DECOY + b"5.6.7\0clang 1\0.8\0") == (1, 2, ".9", "banner")


def test_a_banner_with_a_non_ascii_extra_is_skipped():
    assert banner_version(b"\x004.18.0\0gcc (x) 1\0.\xe9\0" + BANNER) == (4, 19, ".2", "banner")


def test_a_compiler_string_may_be_utf8():
    # The compiler string is whatever the compiler says of itself (any bytes
    # but NUL); only the version string and the extra version must be ASCII.
    assert banner_version("\x004.19.2\0gcc (Debian 12.2.0\u20131) 12.2.0\0.2\0".encode()) == \
        (4, 19, ".2", "banner")


# ---------------------------------------------------------------- values

def test_parsed_values_are_immutable_and_hashable():
    img = parse_image(small_image())
    seg, version, lu = img.segments[0], img.xen_version, img.lu
    assert len({seg, version, lu}) == 3
    for value, name in ((seg, "paddr"), (version, "major"), (lu, "min_version")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, 0)


def test_reprs_leave_out_the_bytes():
    img = parse_image(small_image())
    assert repr(img.segments[0]) == ("Segment(index=0, paddr=2097152, vaddr=2097152, offset=128, "
                                     "filesz=65536, memsz=131072, flags=7)")
    assert "elf_bytes" not in repr(img) and "\\x7fELF" not in repr(img)
