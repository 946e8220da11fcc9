"""`hyperv-sim verify` against its own documentation.

docs/domains.md's `## verify` table lists, per check, every message the
check can print.  Each (check, message) pair of that table is one test
below: a damage function does exactly that damage to a host, and the real
`hyperv-sim verify` must print exactly the PROBLEM lines the damage implies,
end with `verify: K problems` and exit 1.  A message with no damage function
fails, and so does a damage function whose message left the table: the two
cannot drift apart.
"""
import re
import struct
import threading
import types

import pytest

from hyperv_sim._lu_core import ffi, lib
from hyperv_sim.guest import BACKEND_SLOT
from xen_public import abi
from xen_public.abi import PAGE_SIZE
from xen_public.units import MiB

from helpers import REPO, Host, read_ram, run_cli, wait_for, write_ram

CHECKS = {"ownership", "m2p", "memory", "registers", "page-tables", "ioreq", "ring", "event",
          "iommu", "grant", "refcount", "heap"}


# --- the table -------------------------------------------------------------

def parse_table(text):
    """[(check, message)]: every backticked message of the third column."""
    section = text.split("\n## verify\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\| `([a-z0-9-]+)` \|(.*)\|(.*)\|\s*$", line)
        if m:
            rows += [(m.group(1), msg) for msg in re.findall(r"`([^`]+)`", m.group(3))]
    return rows


TABLE = parse_table((REPO / "docs" / "domains.md").read_text())

# The placeholders the table's legend defines.
HEX = r"0x[0-9a-f]+"
PLACEHOLDERS = {
    "0x…": HEX, "GOT": HEX, "WANT": HEX,
    "N": r"\d+", "A": r"\d+", "B": r"\d+", "W": r"\d+", "E": r"\d+",
    "dN": r"d\d+", "vCPUN": r"vCPU\d+",
    "USE": r"[a-z-]+",
    "COUNT": r"\d+(?:\+allocated)?",
    "TYPE": r"(?:none|l[1-4]|seg_desc|writable):\d+(?:\+pinned)?",
    ", …": r"(?:, [a-z0-9]+=0x[0-9a-f]+ \(expected 0x[0-9a-f]+\))*",
}
TOKEN = re.compile(r"0x…|, …|(?<!\w)(?:vCPUN|dN|USE|GOT|WANT|COUNT|TYPE|[NABWE])(?!\w)")


def pattern(message):
    out, pos = [], 0
    for m in TOKEN.finditer(message):
        out += [re.escape(message[pos:m.start()]), PLACEHOLDERS[m.group()]]
        pos = m.end()
    out.append(re.escape(message[pos:]))
    literal = TOKEN.sub("", message)
    assert "…" not in literal, "`%s`: a … that is no placeholder of the legend" % message
    return re.compile("".join(out))


# --- what a user has: the toolstack, the RAM file, the CLI -----------------

FRAME = struct.Struct("<HBBIII")       # owner, use, flags, type_info, count_info, reserved
FRAME_FIELDS = ("owner", "use", "flags", "type_info", "count_info", "reserved")
TYPE_NAMES = {0: "none", 1: "l1", 2: "l2", 3: "l3", 4: "l4", 5: "seg_desc", 7: "writable"}
PRESENT_RW = lib.LU_PTE_PRESENT | lib.LU_PTE_RW
ALLOCATED = lib.LU_PGC_ALLOCATED


def u64(h, addr):
    return struct.unpack("<Q", read_ram(h, addr, 8))[0]


def put_u64(h, addr, value):
    write_ram(h, addr, struct.pack("<Q", value))


def put_u32(h, addr, value):
    write_ram(h, addr, struct.pack("<I", value))


def frame_addr(h, mfn):
    return h.toolstack("info")["frametable"]["start"] + mfn * FRAME.size


def frame(h, mfn):
    return dict(zip(FRAME_FIELDS, FRAME.unpack(read_ram(h, frame_addr(h, mfn), FRAME.size))))


def set_frame(h, mfn, **changes):
    f = dict(frame(h, mfn), **changes)
    write_ram(h, frame_addr(h, mfn), FRAME.pack(*(f[k] for k in FRAME_FIELDS)))


def count_str(c):
    return "%d%s" % (c & lib.LU_PGC_COUNT_MASK, "+allocated" if c & ALLOCATED else "")


def type_str(t):
    return "%s:%d%s" % (TYPE_NAMES[t >> lib.LU_PGT_TYPE_SHIFT], t & lib.LU_PGT_COUNT_MASK,
                        "+pinned" if t & lib.LU_PGT_PINNED else "")


def first_frame_of(h, use):
    start, _, _ = next(r for r in h.toolstack("memmap") if r[2] == use)
    return start // PAGE_SIZE


def create(h, name, dtype, vcpus=1, **extra):
    return h.toolstack("create", name=name, type=dtype, memory=16 * MiB, vcpus=vcpus, **extra)["domid"]


def dom(h, name):
    return h.toolstack("details", domain=name)["domains"][0]


def pause(h, name):
    h.toolstack("pause", domain=name)


def unpause(h, name):
    h.toolstack("unpause", domain=name)


def mfn_of(d, gfn):
    return next(m + gfn - g for g, m, n in d["p2m"] if g <= gfn < g + n)


def clean(h):
    """Every check holds just before the damage: what verify finds after it
    is the damage's doing."""
    rep = h.toolstack("verify")
    assert rep["ok"], rep["problems"]


# 2-level event channels: pending bits in the shared-info page.
def _pending_byte(d, port):
    return d["shared_info_mfn"] * PAGE_SIZE + abi.SHINFO_EVTCHN_PENDING + port // 8


def pending(h, d, port):
    return bool(read_ram(h, _pending_byte(d, port), 1)[0] & (1 << port % 8))


def set_pending(h, d, port, on):
    addr = _pending_byte(d, port)
    b = read_ram(h, addr, 1)[0]
    write_ram(h, addr, bytes([b | 1 << port % 8 if on else b & ~(1 << port % 8)]))


def ioreq_state_addr(d, vcpu=0):
    return d["ioreq_server"]["ioreq_mfn"] * PAGE_SIZE + vcpu * ffi.sizeof("struct lu_ioreq") + 30


def ioreq_state(h, d, vcpu=0):
    return read_ram(h, ioreq_state_addr(d, vcpu), 1)[0] & 0x0F


def set_ioreq_state(h, d, state, vcpu=0):
    addr = ioreq_state_addr(d, vcpu)
    write_ram(h, addr, bytes([(read_ram(h, addr, 1)[0] & 0xF0) | state]))


def runstate(h, name, vcpu=0):
    return dom(h, name)["vcpu_states"][vcpu]["runstate"]


SRING_REQ_PROD = ffi.offsetof("struct lu_sring", "req_prod")
SRING_RSP_PROD = ffi.offsetof("struct lu_sring", "rsp_prod")
INFO_RSP_CONS = ffi.offsetof("struct lu_guest_info", "rsp_cons")
INFO_RSP_ERRORS = ffi.offsetof("struct lu_guest_info", "rsp_errors")


def ring_addr(d):
    return mfn_of(d, d["layout"]["ring_gfn"]) * PAGE_SIZE


def backend_slot_addr(h, d):
    """dom0's backend state for d's frontend: req_cons first."""
    dom0, slot = dom(h, "0"), d["frontend"]["backend_slot"]
    per = PAGE_SIZE // BACKEND_SLOT.size
    return (mfn_of(dom0, dom0["layout"]["backend_gfns"][0] + slot // per) * PAGE_SIZE
            + (slot % per) * BACKEND_SLOT.size)


def ring(h, d):
    base = ring_addr(d)
    return types.SimpleNamespace(
        req_prod=struct.unpack("<I", read_ram(h, base + SRING_REQ_PROD, 4))[0],
        rsp_prod=struct.unpack("<I", read_ram(h, base + SRING_RSP_PROD, 4))[0],
        cons=u64(h, backend_slot_addr(h, d)),
        rsp_cons=u64(h, mfn_of(d, 0) * PAGE_SIZE + INFO_RSP_CONS))


# --- hosts -------------------------------------------------------------------

@pytest.fixture
def served(hv, tmp_path):
    """conftest's in-process hypervisor answering privcmd in its state
    directory, so that the real `hyperv-sim verify` checks it: for damage
    only the hypervisor process can do (its P2M, ports, vCPU registers)."""
    from hyperv_sim.hypercalls import Dispatcher
    from hyperv_sim.privcmd import PrivcmdServer
    from hyperv_sim.toolstack import Toolstack
    from hyperv_sim.xen import SOCKET_FILE
    state_dir = tmp_path / "hv"           # where conftest's hv fixture put its RAM
    server = PrivcmdServer(str(state_dir / SOCKET_FILE), Dispatcher(hv),
                           Toolstack(hv, on_shutdown=lambda: None), hv.console)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Host(state_dir), hv
    server.close()
    thread.join()


def clean_hv(hv):
    rep = hv.verify()
    assert rep["ok"], rep["problems"]


# --- damage, one function per message of the table ---------------------------

DAMAGE = {}


def damages(check, message, in_process=False):
    """Register fn as the damage that makes `check` print `message`.  fn
    returns every problem verify must then report, in order, as
    (who, check, detail)."""
    def register(fn):
        assert (check, message) not in DAMAGE, message
        DAMAGE[(check, message)] = (fn, in_process)
        return fn
    return register


def d(domid):
    return "d%d" % domid


# ownership

@damages("ownership", "mfn 0x… (gfn 0x…) belongs to owner N as USE, not to dN")
def crossed_frames(h):
    # Two guests' frames swapped in the frame table: each still has as many
    # guest frames as its P2M, so only the owners are wrong.
    a, b = create(h, "a", "hvm"), create(h, "b", "hvm")
    ma, mb = mfn_of(dom(h, "a"), 100), mfn_of(dom(h, "b"), 200)
    clean(h)
    set_frame(h, ma, owner=b)
    set_frame(h, mb, owner=a)
    return [(d(a), "ownership", "mfn 0x%x (gfn 0x64) belongs to owner %d as guest, not to d%d" % (ma, b, a)),
            (d(b), "ownership", "mfn 0x%x (gfn 0xc8) belongs to owner %d as guest, not to d%d" % (mb, a, b))]


@damages("ownership", "frames 0x…-0x… lie in LU bootmem", in_process=True)
def guest_frame_from_lu_bootmem(h, hv):
    # The P2M is the hypervisor's: gfn 2048 gets an LU bootmem frame the way
    # a broken allocator would hand it out (frame table, M2P and P2M agree,
    # the old frame is free again), so only where the frame lies is wrong.
    g = hv.create_domain("g", "hvm", 16 * MiB, 1)
    lu = hv.lu_start // PAGE_SIZE
    clean_hv(hv)
    move_gfn_2048(hv, g, lu)
    return [(d(g.domid), "ownership", "frames 0x%x-0x%x lie in LU bootmem" % (lu, lu + 1))]


def move_gfn_2048(hv, g, mfn):
    """g's gfn 2048 moved to frame mfn, the way a broken allocator would:
    frame table, M2P and P2M agree, and the old frame is free again."""
    with hv.lock, hv.sched.stopped():
        (gfn0, mfn0, count), = g.p2m
        gfn = 2048
        hv.frametable.mark(mfn, 1, g.domid, lib.LU_USE_GUEST, count_info=ALLOCATED | 1)
        hv.allocator.release([(mfn0 + gfn, 1)])
        hv.m2p.table[mfn] = gfn
        g.p2m = [(0, mfn0, gfn), (gfn, mfn, 1), (gfn + 1, mfn0 + gfn + 1, count - gfn - 1)]


@damages("ownership", "shared frames at mfn 0x… are not dN's")
def grant_frame_given_away(h):
    g = create(h, "g", "hvm")
    (first, count), = dom(h, "g")["shared_frames"]
    assert count == 2                      # shared info, grant frame
    clean(h)
    set_frame(h, first + 1, owner=0)       # the grant frame is dom0's now
    return [(d(g), "ownership", "shared frames at mfn 0x%x are not d%d's" % (first, g))]


@damages("ownership", "frame table gives dN A guest frames, its P2M B")
def stray_guest_frame(h):
    # A free frame marked as the guest's, counts and all, but in no P2M.
    g = create(h, "g", "hvm")
    stray = first_frame_of(h, "free")
    clean(h)
    free = free_frames(h)
    set_frame(h, stray, owner=g, use=lib.LU_USE_GUEST, count_info=ALLOCATED | 1)
    return [(d(g), "ownership", "frame table gives d%d 4097 guest frames, its P2M 4096" % g),
            heap_line(stray, "held by the allocator, not free in the frame table", free, free - 1)]


def free_frames(h):
    """The frames the table calls free, as `memmap` gives them."""
    return sum(n for _, n, use in h.toolstack("memmap") if use == "free") // PAGE_SIZE


def heap_line(mfn, which, held, table):
    return ("host", "heap", "frames 0x%x+1: %s (the allocator holds %d frames, the table calls %d free)"
            % (mfn, which, held, table))


# heap

@damages("heap", "frames 0x…+N: held by the allocator, not free in the frame table "
         "(the allocator holds N frames, the table calls N free)")
def free_frame_taken_behind_the_allocators_back(h):
    # The table gives a free frame to Xen; the allocator would hand it out.
    taken = first_frame_of(h, "free")
    free = free_frames(h)
    clean(h)
    set_frame(h, taken, owner=abi.DOMID_XEN, use=lib.LU_USE_XENHEAP)
    return [heap_line(taken, "held by the allocator, not free in the frame table", free, free - 1)]


@damages("heap", "frames 0x…+N: free in the frame table, not held by the allocator "
         "(the allocator holds N frames, the table calls N free)", in_process=True)
def frame_freed_behind_the_allocators_back(h, hv):
    # Xen takes a frame, then its entry says free again: lost to the host.
    (lost, _), = hv.allocator.alloc(1, abi.DOMID_XEN, lib.LU_USE_XENHEAP)
    clean_hv(hv)
    free = hv.allocator.free_frames
    hv.frametable.mark(lost, 1, abi.DOMID_INVALID, lib.LU_USE_FREE)
    return [heap_line(lost, "free in the frame table, not held by the allocator", free, free + 1)]


@damages("heap", "frames 0x…+N are held twice by the allocator", in_process=True)
def free_frame_released_again(h, hv):
    # A free frame given back once more: the allocator would hand it out twice.
    first, n = next((s, n) for s, n in hv.allocator.free_extents() if n >= 10)
    clean_hv(hv)
    hv.allocator.release([(first + 5, 1)])
    return [("host", "heap", "frames 0x%x+1 are held twice by the allocator" % (first + 5))]


# m2p

@damages("m2p", "M2P[0x…] is 0x…, expected gfn 0x…")
def wrong_m2p_entry(h):
    g = create(h, "g", "hvm")
    mfn = mfn_of(dom(h, "g"), 7)
    clean(h)
    put_u64(h, first_frame_of(h, "m2p") * PAGE_SIZE + mfn * 8, 12345)
    return [(d(g), "m2p", "M2P[0x%x] is 0x3039, expected gfn 0x7" % mfn)]


# memory and registers

@damages("memory", "vCPUN working set: W words differ after N steps; "
                   "first at gfn 0x… offset 0x…: GOT, expected WANT")
def corrupted_working_set_word(h):
    g = create(h, "g", "hvm", vcpus=2)
    pause(h, "g")                          # or its next steps write the word again
    info = dom(h, "g")
    lay = info["layout"]
    gfn = lay["ws_base_gfn"] + lay["ws_pages"] + 3      # vCPU1's fourth page
    addr = mfn_of(info, gfn) * PAGE_SIZE + 0x10
    good = u64(h, addr)
    clean(h)
    put_u64(h, addr, good ^ 0xdeadbeef)
    return [(d(g), "memory", "vCPU1 working set: 1 words differ after %d steps; first at gfn 0x%x "
             "offset 0x10: 0x%x, expected 0x%x"
             % (info["vcpu_states"][1]["steps"], gfn, good ^ 0xdeadbeef, good))]


@damages("registers", "vCPUN after N steps: rax=0x… (expected 0x…), …", in_process=True)
def flipped_register_bit(h, hv):
    # Registers live in the hypervisor's vCPU structures, not in RAM.
    g = hv.create_domain("g", "pvh", 16 * MiB, 2)
    v = g.vcpu_state[1]
    wait_for(lambda: v.steps > 0, "vCPU1 to run")
    hv.set_paused("g", True)
    clean_hv(hv)
    good = v.regs.rax
    v.regs.rax = good ^ 1
    return [(d(g.domid), "registers", "vCPU1 after %d steps: rax=0x%x (expected 0x%x)"
             % (v.steps, good ^ 1, good))]


# page-tables: entry 511 of the L4 is the last one the walk reads, so no
# other frame misses the references a stopped walk would not give.

def pv_l4_entry_511(h, pointing_at):
    g = create(h, "g", "pv")
    pause(h, "g")
    info = dom(h, "g")
    addr = info["l4_mfn"] * PAGE_SIZE + 511 * 8
    assert u64(h, addr) == 0
    value = pointing_at(info)
    clean(h)
    put_u64(h, addr, value)
    return g, info


@damages("page-tables", "table at mfn 0x… entry E points at a frame dN does not own")
def l4_entry_to_dom0(h):
    dom0_frame = dom(h, "0")["p2m"][0][1]
    g, info = pv_l4_entry_511(h, lambda info: dom0_frame << 12 | PRESENT_RW)
    return [(d(g), "page-tables", "table at mfn 0x%x entry 511 points at a frame d%d does not own"
             % (info["l4_mfn"], g))]


@damages("page-tables", "table at mfn 0x… entry E points past the end of RAM")
def l4_entry_past_ram(h):
    end = h.toolstack("info")["total_memory"] // PAGE_SIZE
    g, info = pv_l4_entry_511(h, lambda info: end << 12 | lib.LU_PTE_PRESENT)
    return [(d(g), "page-tables", "table at mfn 0x%x entry 511 points past the end of RAM"
             % info["l4_mfn"])]


@damages("page-tables", "table at mfn 0x… entry E needs a frame to have two types")
def l4_entry_to_a_writable_page(h):
    # A data page the guest maps writable, offered as an L3 table.  The walk
    # has counted the reference before it finds the conflict: refcount says so.
    data = {}

    def ws_page(info):
        gfn = info["layout"]["ws_base_gfn"]
        data.update(gfn=gfn, mfn=mfn_of(info, gfn))
        data.update(frame(h, data["mfn"]))
        return data["mfn"] << 12 | PRESENT_RW
    g, info = pv_l4_entry_511(h, ws_page)
    assert (count_str(data["count_info"]), type_str(data["type_info"])) == ("2+allocated", "writable:1")
    return [(d(g), "page-tables", "table at mfn 0x%x entry 511 needs a frame to have two types"
             % info["l4_mfn"]),
            (d(g), "refcount", "mfn 0x%x (d%d gfn 0x%x, guest): count 2+allocated type writable:1, "
             "expected count 3+allocated type writable:1" % (data["mfn"], g, data["gfn"]))]


# ioreq

@damages("ioreq", "vCPUN is running but its ioreq slot is in state N")
def ioreq_slot_in_use_while_running(h):
    g = create(h, "g", "hvm")
    for _ in range(100):                   # catch it between two I/O requests
        pause(h, "g")
        if runstate(h, "g") == "running":
            break
        unpause(h, "g")
    else:
        pytest.fail("the HVM vCPU was always waiting for I/O when paused")
    info = dom(h, "g")
    assert ioreq_state(h, info) == lib.LU_IOREQ_NONE
    clean(h)
    set_ioreq_state(h, info, lib.LU_IOREQ_INPROCESS)
    return [(d(g), "ioreq", "vCPU0 is running but its ioreq slot is in state 2")]


def hvm_waiting_for_dom0(h):
    """An HVM guest whose vCPU0 waits for I/O dom0 has not served: both paused."""
    g = create(h, "g", "hvm")
    pause(h, "0")                          # the device model stops
    wait_for(lambda: runstate(h, "g") == "blocked (I/O)", "an I/O request in flight")
    pause(h, "g")
    return g, dom(h, "g")


@damages("ioreq", "vCPUN is waiting for I/O but its ioreq slot is in state N")
def ioreq_slot_emptied_while_waiting(h):
    g, info = hvm_waiting_for_dom0(h)
    clean(h)
    set_ioreq_state(h, info, lib.LU_IOREQ_NONE)
    return [(d(g), "ioreq", "vCPU0 is waiting for I/O but its ioreq slot is in state 0")]


# ring: a PV frontend (here a PVH guest) with dom0's backend

def frontend_at_rest(h):
    """A frontend and dom0's backend, both paused with every request answered
    and no event pending at the backend."""
    g = create(h, "g", "pvh")
    info = dom(h, "g")
    wait_for(lambda: ring(h, info).req_prod >= 2, "ring requests")
    pause(h, "g")
    dom0 = dom(h, "0")
    be = info["frontend"]["be_port"]

    def answered():
        r = ring(h, info)
        return r.cons == r.req_prod == r.rsp_prod and not pending(h, dom0, be)
    wait_for(answered, "the backend to answer every request")
    pause(h, "0")
    return g, dom(h, "g"), dom0


@damages("ring", "the guest received N corrupted backend responses")
def corrupted_responses(h):
    g = create(h, "g", "pvh")
    pause(h, "g")                          # the guest counts them in its own page
    addr = mfn_of(dom(h, "g"), 0) * PAGE_SIZE + INFO_RSP_ERRORS
    assert u64(h, addr) == 0
    clean(h)
    put_u64(h, addr, 7)
    return [(d(g), "ring", "the guest received 7 corrupted backend responses")]


@damages("ring", "req_prod A, but N steps produce B requests")
def request_from_nowhere(h):
    g, info, dom0 = frontend_at_rest(h)
    r = ring(h, info)
    steps = info["vcpu_states"][0]["steps"]
    assert steps // 32768 == r.req_prod
    clean(h)
    put_u32(h, ring_addr(info) + SRING_REQ_PROD, r.req_prod + 1)
    set_pending(h, dom0, info["frontend"]["be_port"], True)    # notified: no lost event
    return [(d(g), "ring", "req_prod %d, but %d steps produce %d requests"
             % (r.req_prod + 1, steps, r.req_prod))]


@damages("ring", "rsp_prod A but the backend consumed B")
def response_from_nowhere(h):
    g, info, _ = frontend_at_rest(h)
    r = ring(h, info)
    clean(h)
    put_u32(h, ring_addr(info) + SRING_RSP_PROD, r.cons + 1)
    set_pending(h, info, info["frontend"]["fe_port"], True)    # notified: no lost event
    return [(d(g), "ring", "rsp_prod %d but the backend consumed %d" % (r.cons + 1, r.cons))]


# event: lost events are pending bits cleared in guest memory

@damages("event", "lost event: vCPUN's I/O request waits, but dom0 port N (device model) is not pending")
def lost_ioreq_notification(h):
    g, info = hvm_waiting_for_dom0(h)
    dm = info["ioreq_server"]["ports"][0][1]
    dom0 = dom(h, "0")
    assert ioreq_state(h, info) == lib.LU_IOREQ_READY and pending(h, dom0, dm)
    clean(h)
    set_pending(h, dom0, dm, False)
    return [(d(g), "event", "lost event: vCPU0's I/O request waits, but dom0 port %d (device model) "
             "is not pending" % dm)]


@damages("event", "lost event: vCPUN's I/O is answered, but its port N is not pending")
def lost_ioreq_answer(h):
    g, info = hvm_waiting_for_dom0(h)
    unpause(h, "0")                        # the device model answers a paused guest
    wait_for(lambda: ioreq_state(h, info) == lib.LU_IORESP_READY, "the device model's answer")
    pause(h, "0")
    port = info["ioreq_server"]["ports"][0][0]
    assert pending(h, info, port)
    clean(h)
    set_pending(h, info, port, False)
    return [(d(g), "event", "lost event: vCPU0's I/O is answered, but its port %d is not pending" % port)]


def requests_dom0_has_not_seen(h):
    g = create(h, "g", "pvh")
    info = dom(h, "g")
    pause(h, "0")                          # the backend stops
    wait_for(lambda: ring(h, info).req_prod > ring(h, info).cons, "a request dom0 has not seen")
    pause(h, "g")
    return g, info


@damages("event", "lost event: N requests wait for dom0's backend, but its port N is not pending")
def lost_ring_request_notification(h):
    g, info = requests_dom0_has_not_seen(h)
    dom0, be = dom(h, "0"), info["frontend"]["be_port"]
    r = ring(h, info)
    assert pending(h, dom0, be)
    clean(h)
    set_pending(h, dom0, be, False)
    return [(d(g), "event", "lost event: %d requests wait for dom0's backend, but its port %d is not "
             "pending" % (r.req_prod - r.cons, be))]


@damages("event", "lost event: N responses wait for the guest, but its port N is not pending")
def lost_ring_response_notification(h):
    g, info = requests_dom0_has_not_seen(h)
    wanted = ring(h, info).req_prod
    unpause(h, "0")                        # the backend answers a paused guest
    wait_for(lambda: ring(h, info).rsp_prod == wanted, "the backend's responses")
    pause(h, "0")
    r, fe = ring(h, info), info["frontend"]["fe_port"]
    assert r.rsp_prod != r.rsp_cons & 0xFFFFFFFF and pending(h, info, fe)
    clean(h)
    set_pending(h, info, fe, False)
    return [(d(g), "event", "lost event: %d responses wait for the guest, but its port %d is not "
             "pending" % ((r.rsp_prod - r.rsp_cons) & 0xFFFFFFFF, fe))]


@damages("event", "port N is bound to dN port N, which does not point back", in_process=True)
def dom0_port_closed_under_the_frontend(h, hv):
    # Port tables are the hypervisor's: dom0's end of the frontend's channel
    # goes, the guest's end still names it.
    g = hv.create_domain("g", "pvh", 16 * MiB, 1)
    hv.set_paused("g", True)
    fe, be = g.frontend.fe_port, g.frontend.be_port
    clean_hv(hv)
    with hv.lock:
        del hv.domains[0].evtchn.ports[be]
    return [(d(g.domid), "event", "port %d is bound to d0 port %d, which does not point back" % (fe, be))]


# iommu

def iommu_leaf_of_gfn_7(h):
    g = create(h, "g", "hvm", pci=["0000:03:00.0"])

    def child(table_mfn):
        entry = u64(h, table_mfn * PAGE_SIZE)
        assert entry & lib.LU_PTE_PRESENT
        return entry >> 12
    l1 = child(child(child(dom(h, "g")["iommu_root"])))
    return g, l1 * PAGE_SIZE + 7 * 8


@damages("iommu", "IOMMU maps gfn 0x… elsewhere than the P2M")
def iommu_leaf_off_by_one_frame(h):
    g, leaf = iommu_leaf_of_gfn_7(h)
    clean(h)
    put_u64(h, leaf, u64(h, leaf) + (1 << 12))     # DMA to gfn 7 would hit the next frame
    return [(d(g), "iommu", "IOMMU maps gfn 0x7 elsewhere than the P2M")]


@damages("iommu", "IOMMU maps A of B gfns")
def iommu_leaf_missing(h):
    g, leaf = iommu_leaf_of_gfn_7(h)
    clean(h)
    put_u64(h, leaf, 0)
    return [(d(g), "iommu", "IOMMU maps 4095 of 4096 gfns")]


# grant: v1 entries {u16 flags, u16 domid, u32 frame} in the guest's grant frame

V1 = struct.Struct("<HHI")


def grant_entry_addr(h, ref):
    g = create(h, "g", "pvh")
    pause(h, "g")
    return g, dom(h, "g")["grant_table"]["frames"][0] * PAGE_SIZE + ref * V1.size


@damages("grant", "ref N is mapped by dN but no longer granted to it")
def grant_revoked_while_mapped(h):
    g, addr = grant_entry_addr(h, 9)
    clean(h)
    write_ram(h, addr, bytes(V1.size))
    return [(d(g), "grant", "ref 9 is mapped by d0 but no longer granted to it")]


@damages("grant", "ref N is mapped but its entry lacks GTF_reading/writing")
def grant_in_use_bit_cleared(h):
    g, addr = grant_entry_addr(h, 9)       # dom0 maps ref 9 writable
    flags, domid, gfn = V1.unpack(read_ram(h, addr, V1.size))
    assert flags & abi.GTF_writing
    clean(h)
    write_ram(h, addr, V1.pack(flags & ~abi.GTF_writing, domid, gfn))
    return [(d(g), "grant", "ref 9 is mapped but its entry lacks GTF_reading/writing")]


@damages("grant", "ref N now names gfn 0x…, not the mapped frame")
def grant_moved_to_another_frame(h):
    g, addr = grant_entry_addr(h, 8)
    flags, domid, gfn = V1.unpack(read_ram(h, addr, V1.size))
    clean(h)
    write_ram(h, addr, V1.pack(flags, domid, gfn + 100))
    return [(d(g), "grant", "ref 8 now names gfn 0x%x, not the mapped frame" % (gfn + 100))]


@damages("grant", "dN maps ref N of a domain that no longer exists", in_process=True)
def granter_forgotten(h, hv):
    # The domain goes from the hypervisor's table (and dom0's ports to it)
    # while dom0 still maps its grants: only the hypervisor process can lose it.
    g = hv.create_domain("g", "pvh", 16 * MiB, 1)
    hv.set_paused("g", True)
    refs = [m.ref for m in hv.mappings.grant_maps if m.granter == g.domid]
    assert refs == [8, 9, 10]
    clean_hv(hv)
    with hv.lock, hv.sched.stopped():
        ports = hv.domains[0].evtchn.ports
        for port in [p for p, v in ports.items() if v.remote_domid == g.domid]:
            del ports[port]
        del hv.domains[g.domid]
    return [(d(g.domid), "grant", "d0 maps ref %d of a domain that no longer exists" % r) for r in refs]


# refcount

@damages("refcount", "mfn 0x… (dN gfn 0x…, guest): count COUNT type TYPE, expected count COUNT type TYPE")
def extra_reference_on_a_guest_frame(h):
    g = create(h, "g", "hvm")
    mfn = mfn_of(dom(h, "g"), 100)
    f = frame(h, mfn)
    assert (f["count_info"], f["type_info"]) == (ALLOCATED | 1, 0)    # HVM: the allocation only
    clean(h)
    set_frame(h, mfn, count_info=f["count_info"] + 1)
    return [(d(g), "refcount", "mfn 0x%x (d%d gfn 0x64, guest): count 2+allocated type none:0, "
             "expected count 1+allocated type none:0" % (mfn, g))]


@damages("refcount", "mfn 0x… (owner N, USE): count COUNT type TYPE, expected count COUNT type TYPE")
def reference_on_a_free_frame(h):
    # A free frame belongs to DOMID_INVALID: the problem is the host's.
    mfn = first_frame_of(h, "free")
    f = frame(h, mfn)
    assert (f["owner"], f["count_info"], f["type_info"]) == (abi.DOMID_INVALID, 0, 0)
    clean(h)
    set_frame(h, mfn, count_info=1)
    return [("host", "refcount", "mfn 0x%x (owner %d, free): count 1 type none:0, expected count 0 "
             "type none:0" % (mfn, abi.DOMID_INVALID))]


@damages("refcount", "N more frames differ")
def extra_references_on_25_frames(h):
    g = create(h, "g", "hvm")
    info = dom(h, "g")
    mfns = [mfn_of(info, gfn) for gfn in range(200, 225)]
    assert mfns == sorted(mfns)            # verify names frames in mfn order
    clean(h)
    for mfn in mfns:
        set_frame(h, mfn, count_info=ALLOCATED | 2)
    named = [(d(g), "refcount", "mfn 0x%x (d%d gfn 0x%x, guest): count 2+allocated type none:0, "
              "expected count 1+allocated type none:0" % (mfn, g, gfn))
             for gfn, mfn in zip(range(200, 220), mfns)]
    return named + [("host", "refcount", "5 more frames differ")]


# --- the tests -------------------------------------------------------------

def test_the_table_has_a_row_for_every_check():
    assert {check for check, _ in TABLE} == CHECKS


def test_every_damage_function_has_its_message_in_the_table():
    orphans = sorted(set(DAMAGE) - set(TABLE))
    assert not orphans, "damage functions for messages no longer in docs/domains.md: %s" % orphans


@pytest.mark.parametrize("check, message", TABLE, ids=["%s: %s" % row for row in TABLE])
def test_verify_prints_the_table_message(check, message, request):
    if (check, message) not in DAMAGE:
        pytest.fail("docs/domains.md's verify table lists %s `%s`, but no damage function here "
                    "produces it" % (check, message))
    fn, in_process = DAMAGE[(check, message)]
    if in_process:
        h, hv = request.getfixturevalue("served")
        expected = fn(h, hv)
    else:
        h = request.getfixturevalue("host")
        expected = fn(h)
    # The damage makes this message, and every line it makes is one the
    # table lists for its check.
    assert any(c == check and pattern(message).fullmatch(detail) for _, c, detail in expected)
    for _, c, detail in expected:
        assert any(pattern(m).fullmatch(detail) for cc, m in TABLE if cc == c), \
            "`%s` is no %s message of the table" % (detail, c)
    r = run_cli("hyperv-sim", "verify", state_dir=h.state_dir)
    lines = r.stdout.splitlines()
    assert [l for l in lines if l.startswith("PROBLEM ")] == \
        ["PROBLEM %s %s: %s" % e for e in expected], r
    assert lines[-1] == "verify: %d problems" % len(expected), r
    assert r.returncode == 1, r


# --- edges one damage per message does not reach -----------------------------

def problems(h):
    r = run_cli("hyperv-sim", "verify", state_dir=h.state_dir)
    assert r.returncode == (1 if "PROBLEM " in r.stdout else 0), r
    return [l[len("PROBLEM "):] for l in r.stdout.splitlines() if l.startswith("PROBLEM ")]


def refcount_line(h, who, mfn, f, count_info):
    """verify's refcount line for frame mfn (as f was) now holding count_info."""
    where = "d%d gfn 0x%x" % (f["owner"], f["gfn"]) if "gfn" in f else "owner %d" % f["owner"]
    return "%s refcount: mfn 0x%x (%s, %s): count %s type %s, expected count %s type %s" % (
        who, mfn, where, f["use_name"], count_str(count_info), type_str(f["type_info"]),
        count_str(f["count_info"]), type_str(f["type_info"]))


def test_refcount_lines_name_every_page_table_type(host):
    """A PV guest's L4, L3, L2 and L1 tables and its GDT, each given one
    reference too many: five lines, each with the frame's type as Xen
    names it (PGT_l1_page_table .. PGT_seg_desc_page)."""
    g = create(host, "p", "pv")
    pause(host, "p")
    info = dom(host, "p")
    first = {}
    for gfn0, mfn0, n in info["p2m"]:
        for i in range(n):
            f = frame(host, mfn0 + i)
            t = TYPE_NAMES.get(f["type_info"] >> lib.LU_PGT_TYPE_SHIFT)
            if t in ("l1", "l2", "l3", "l4", "seg_desc") and t not in first:
                first[t] = (mfn0 + i, dict(f, gfn=gfn0 + i, use_name="guest"))
    assert sorted(first) == ["l1", "l2", "l3", "l4", "seg_desc"]
    clean(host)
    for mfn, f in first.values():
        set_frame(host, mfn, count_info=f["count_info"] + 1)
    assert problems(host) == [refcount_line(host, d(g), mfn, f, f["count_info"] + 1)
                              for mfn, f in sorted(first.values())]


def test_refcount_reaches_frame_0_and_reserved_owners_are_the_hosts(host):
    """The comparison starts at mfn 0; a frame whose owner is a reserved
    domid (DOMID_FIRST_RESERVED and up, here DOMID_SELF itself) is the
    host's problem, not a domain's."""
    f0 = dict(frame(host, 0), use_name=next(u for s, n, u in host.toolstack("memmap") if s == 0))
    free = first_frame_of(host, "free")
    ffree = dict(frame(host, free), use_name="free")
    clean(host)
    set_frame(host, 0, count_info=f0["count_info"] + 1)
    nr_free = free_frames(host)
    set_frame(host, free, owner=abi.DOMID_FIRST_RESERVED, count_info=1)
    assert problems(host) == [
        refcount_line(host, "host", 0, f0, f0["count_info"] + 1),
        refcount_line(host, "host", free, dict(ffree, owner=abi.DOMID_FIRST_RESERVED), 1),
        "host heap: " + heap_line(free, "held by the allocator, not free in the frame table",
                                  nr_free, nr_free - 1)[2]]


def test_twenty_frames_are_all_named_and_no_more_line(host):
    g = create(host, "g", "hvm")
    info = dom(host, "g")
    mfns = [mfn_of(info, gfn) for gfn in range(200, 220)]
    clean(host)
    for mfn in mfns:
        set_frame(host, mfn, count_info=ALLOCATED | 2)
    lines = problems(host)
    assert len(lines) == 20 and not any("more frames differ" in l for l in lines), lines


def test_an_iommu_with_no_leaf_maps_none_of_the_gfns(host):
    g = create(host, "g", "hvm", pci=["0000:03:00.0"])
    root = dom(host, "g")["iommu_root"]
    # Once the device has done its first DMA, the IOMMU has its one IOVA
    # cached: it does not walk the tables zeroed below, only verify does.
    from hyperv_sim.chipset import Chipset
    chipset = Chipset.open(str(host.state_dir / "chipset"))
    try:
        wait_for(lambda: chipset.c.dev[0].dma_ops > 0, "the device's first DMA")
    finally:
        chipset.close()
    clean(host)
    write_ram(host, root * PAGE_SIZE, bytes(PAGE_SIZE))
    assert problems(host) == ["d%d iommu: IOMMU maps 0 of 4096 gfns" % g]


def test_a_writable_mapping_needs_gtf_reading_too(host):
    """Xen sets both GTF_reading and GTF_writing for a writable mapping:
    either one missing is a problem, not only GTF_writing."""
    g, addr = grant_entry_addr(host, 9)            # dom0 maps ref 9 writable
    flags, domid, gfn = V1.unpack(read_ram(host, addr, V1.size))
    assert flags & abi.GTF_reading and flags & abi.GTF_writing
    clean(host)
    write_ram(host, addr, V1.pack(flags & ~abi.GTF_reading, domid, gfn))
    assert problems(host) == ["d%d grant: ref 9 is mapped but its entry lacks GTF_reading/writing" % g]


def test_a_back_pointer_to_the_right_domain_but_another_port(served):
    h, hv = served
    g = hv.create_domain("g", "pvh", 16 * MiB, 1)
    hv.set_paused("g", True)
    fe, be = g.frontend.fe_port, g.frontend.be_port
    clean_hv(hv)
    with hv.lock:
        hv.domains[0].evtchn.ports[be].remote_port = fe + 1000
    assert problems(h) == [
        "d0 event: port %d is bound to d%d port %d, which does not point back" % (be, g.domid, fe + 1000),
        "d%d event: port %d is bound to d0 port %d, which does not point back" % (g.domid, fe, be)]


@pytest.mark.parametrize("where", ["below LU bootmem", "first of LU bootmem", "last of LU bootmem",
                                   "last of Xen"])
def test_guest_frames_in_the_update_area_edges(served, where):
    """The frames xen#2 boots in, [LU bootmem start, Xen's end), hold no
    guest frame; the frame just below them (Xen's heap: other checks may
    mind, this one does not) is outside."""
    h, hv = served
    lu, xen_end = hv.lu_start // PAGE_SIZE, (hv.xen_start + hv.xen_size) // PAGE_SIZE
    target = {"below LU bootmem": lu - 1, "first of LU bootmem": lu,
              "last of LU bootmem": lu + hv.lu_size // PAGE_SIZE - 1, "last of Xen": xen_end - 1}[where]
    g = hv.create_domain("g", "hvm", 16 * MiB, 1)
    hv.set_paused("g", True)
    clean_hv(hv)
    move_gfn_2048(hv, g, target)
    found = [p for p in problems(h) if "lie in LU bootmem" in p]
    expect = [] if where == "below LU bootmem" else \
        ["d%d ownership: frames 0x%x-0x%x lie in LU bootmem" % (g.domid, target, target + 1)]
    assert found == expect
