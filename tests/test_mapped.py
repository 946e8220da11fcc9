"""xen#2 finding the stream (liveupdate/mapped.py) at the edges the man
page draws: kexec-lu-stream(5) says a breadcrumb's length lies in its last
page (more than (pages - 1) x 4 KiB, at most pages x 4 KiB), the MFN array
and every stream page lie inside RAM and outside LU bootmem and the
hypervisor image.  Each test puts a value just inside and just outside an
edge; the refusal that follows (or, inside, the next check's) shows which
side the mapper put it.  test_restore_refusals.py has the plain refusals."""
import pytest

from streamkit import crumb, handed_over, map_stream, mfns_of, refuse_map, saved, set_array  # noqa: F401

PAGE = 4096
STREAM_HASH = "the stream does not match its breadcrumb hash (corrupted in memory)"


def test_a_one_page_stream_maps(saved):
    hv, _, _ = saved
    data = bytes(range(256)) * 4
    with handed_over(hv, data):
        assert map_stream(hv).buf == data


def test_no_pages_and_no_bytes_is_not_a_stream(saved):
    hv, data, _ = saved
    with handed_over(hv, data):
        crumb(hv, 2, 0)
        crumb(hv, 3, 0)
        refuse_map(hv, "breadcrumb: 0 stream pages for 0 bytes is not a stream")


def test_the_length_lies_in_the_last_page(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        n = pages.nr
        crumb(hv, 3, (n - 1) * PAGE)            # ends a page early: refused
        refuse_map(hv, "breadcrumb: %d stream pages for %d bytes is not a stream" % (n, (n - 1) * PAGE))
        for length in ((n - 1) * PAGE + 1, n * PAGE):   # in the last page: framing passes, the hash not
            crumb(hv, 3, length)
            refuse_map(hv, STREAM_HASH)


def test_as_many_pages_as_ram_has_frames_passes_the_count(saved):
    hv, data, _ = saved
    with handed_over(hv, data):
        crumb(hv, 2, hv.ram.nr_frames << 12)
        crumb(hv, 3, hv.ram.nr_frames * PAGE)
        # Past the count check: the array (inside RAM, 2048 frames) is next.
        refuse_map(hv, "the MFN array at 0x%x does not match its breadcrumb hash" % read_array(hv))
        crumb(hv, 2, (hv.ram.nr_frames + 1) << 12)
        crumb(hv, 3, (hv.ram.nr_frames + 1) * PAGE)
        refuse_map(hv, "breadcrumb: %d stream pages for %d bytes is not a stream"
                   % (hv.ram.nr_frames + 1, (hv.ram.nr_frames + 1) * PAGE))


def read_array(hv):
    import struct
    return struct.unpack("<Q", hv.ram.read(hv.lu_start + 8, 8))[0]


def test_an_mfn_array_in_the_last_frame_of_ram_is_inside(saved):
    hv, data, _ = saved
    with handed_over(hv, data):
        last = (hv.ram.nr_frames - 1) * PAGE
        crumb(hv, 1, last)
        refuse_map(hv, "the MFN array at 0x%x does not match its breadcrumb hash" % last)


def test_a_stream_page_past_the_last_frame(saved):
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        mfns = mfns_of(pages)
        set_array(hv, pages, [hv.ram.nr_frames] + mfns[1:])
        refuse_map(hv, "MFN array entry 0: frame 0x%x is past the end of RAM" % hv.ram.nr_frames)
        set_array(hv, pages, [hv.ram.nr_frames - 1] + mfns[1:])
        refuse_map(hv, STREAM_HASH)             # the last frame is RAM: only its bytes are wrong


def regions(hv):
    """Xen's two regions a stream page may not be in, as [lo, hi) frames."""
    return {"LU bootmem": (hv.lu_start // PAGE, (hv.lu_start + hv.lu_size) // PAGE),
            "the hypervisor image": (hv.xen_start // PAGE, -(-(hv.xen_start + hv.xen_size) // PAGE))}


@pytest.mark.parametrize("region", ["LU bootmem", "the hypervisor image"])
def test_stream_pages_at_the_edges_of_xens_regions(saved, region):
    hv, data, _ = saved
    lo, hi = regions(hv)[region]
    with handed_over(hv, data) as pages:
        mfns = mfns_of(pages)
        for frame in (lo, hi - 1, lo - 1, hi):
            if frame in mfns:
                continue
            # Where the frame is, by the two ranges alone (LU bootmem ends
            # where the image begins, so one's edge may be in the other).
            inside = [name for name, (a, b) in regions(hv).items() if a <= frame < b]
            set_array(hv, pages, [frame] + mfns[1:])
            refuse_map(hv, "stream page 0 (frame 0x%x) lies in %s" % (frame, inside[0]) if inside
                       else STREAM_HASH)


def test_extents_are_the_frames_xen1_took(saved):
    """What xen#2 frees after the restore: exactly the stream pages and the
    MFN array, as xen#1's allocator handed them out."""
    hv, data, _ = saved
    with handed_over(hv, data) as pages:
        taken = sorted((m, n) for m, n in pages.extents)
        found = map_stream(hv).extents()
        assert sum(n for _, n in found) == sum(n for _, n in taken)
        frames = sorted(m + i for m, n in found for i in range(n))
        assert frames == sorted(m + i for m, n in taken for i in range(n))
        # Coalesced: no two extents of stream pages touch.
        runs = sorted(found[:-1])
        assert all(a + n < b for (a, n), (b, _) in zip(runs, runs[1:]))
        assert found[-1] == (pages.array_maddr // PAGE, -(-pages.nr * 8 // PAGE))
