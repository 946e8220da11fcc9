/*
 * The hypervisor's private structures and the C core: the frame table,
 * page types and reference counts, vCPUs, dom0's software and the scheduler
 * as the hypervisor holds them (with host pointers into guest memory), the
 * live-update stream's checks, and the prototype of every C core function.
 * Seen by the hypervisor only (hyperv_sim, through cffi); none of it is in
 * guest memory.  What guests see is lu_guest.h, included here.
 *
 * cffi's cdef() reads this file as is, after lu_guest.h (csrc/build_core.py
 * drops the include guard and the #include), so: declarations only,
 * constants as enums, no other preprocessor logic.
 */
#ifndef LU_CORE_H
#define LU_CORE_H

#include "lu_guest.h"

/*
 * One entry of the frame table, per 4 KiB machine frame (MFN).  xen#1's
 * private format: never preserved as such across a live update; xen#2
 * rebuilds it from stream records.  16 bytes so a 64 GiB host's table is
 * 256 MiB.
 */
struct lu_frame {
    uint16_t owner;       /* domid, or DOMID_XEN / DOMID_IO / DOMID_INVALID */
    uint8_t  use;         /* enum lu_frame_use */
    uint8_t  flags;
    uint32_t type_info;   /* PV page type and type count, Xen's PGT_* style */
    uint32_t count_info;  /* general reference count */
    uint32_t reserved;
};

enum lu_frame_use {
    LU_USE_FREE = 0,        /* on the heap, may be handed to anyone */
    LU_USE_RESERVED = 1,    /* firmware / low memory, never allocated */
    LU_USE_XEN_IMAGE = 2,   /* the running hypervisor's image */
    LU_USE_LU_BOOTMEM = 3,  /* live-update bootmem: never guest-visible */
    LU_USE_XENHEAP = 4,     /* hypervisor-owned data (frame table, notes) */
    LU_USE_GUEST = 5,       /* owned by a domain */
    LU_USE_KIMAGE = 6,      /* staging copy of a loaded kexec image */
    LU_USE_CRASH = 7,       /* crash-kernel region (crashkernel=) */
    LU_USE_STREAM = 8,      /* live-update stream data pages */
    LU_USE_SHARED = 9,      /* Xen page shared with its owner: shared info, grant frames */
    LU_USE_M2P = 10,        /* the machine-to-phys table: kept across a live update */
    LU_USE_IOMMU_PT = 11,   /* IOMMU page tables: live while devices do DMA */
    LU_USE_MAX = 12
};

/* Mark frames [first, first + count): owner, use, counts. */
void lu_frames_set(struct lu_frame *ft, uint64_t first, uint64_t count,
                   uint16_t owner, uint8_t use,
                   uint32_t type_info, uint32_t count_info);

/*
 * Find the runs ("extents") of frames in [first, end) whose owner and use
 * match.  Writes up to max_out extents to starts[]/lengths[] and returns how
 * many exist in total, so a caller can size its arrays and call again.
 */
uint64_t lu_frames_scan(const struct lu_frame *ft, uint64_t first, uint64_t end,
                        uint16_t owner, uint8_t use,
                        uint64_t *starts, uint64_t *lengths, uint64_t max_out);

/* Frames in [first, end) owned by `owner` whose page type is a page table
 * or a descriptor page (per-page state worth a record): up to max_out of
 * them with their type_info; returns how many there are. */
uint64_t lu_frames_typed(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint16_t owner, uint64_t *mfns, uint32_t *type_info, uint64_t max_out);

/* Runs of frames in [first, end) with the same use, whoever owns them:
 * writes up to max_out (start, length, use) triples; returns how many runs
 * there are.  For memory maps. */
uint64_t lu_frames_use_runs(const struct lu_frame *ft, uint64_t first, uint64_t end,
                            uint64_t *starts, uint64_t *lengths, uint8_t *uses, uint64_t max_out);

/* Number of frames in [first, end) whose owner and use match. */
uint64_t lu_frames_count(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint16_t owner, uint8_t use);

/*
 * First frame in [first, end) whose use or owner differ from the given
 * ones, or end if every frame matches.
 */
uint64_t lu_frames_find_mismatch(const struct lu_frame *ft, uint64_t first,
                                 uint64_t end, uint16_t owner, uint8_t use);

/*
 * Scrub host RAM: give [offset, offset + len) of the RAM file back to the
 * filesystem so it reads as zeros and costs no disk.  0 or -errno.
 */
int lu_ram_scrub(int fd, uint64_t offset, uint64_t len);

/* Map [addr, addr + len) of a mapping ahead of its first accesses:
 * writable (MADV_POPULATE_WRITE, which dirties every page) or readable
 * (MADV_POPULATE_READ); addr page-aligned.  0, or -errno (e.g. -EINVAL
 * before Linux 5.14: the accesses then fault as usual). */
int lu_ram_populate(uint8_t *addr, uint64_t len, int write);

/*
 * A hypercall caller's memory (lu_caller.c): copy len bytes between buf and
 * [addr, addr + len) of process pid.  0, -EFAULT when the range is not all
 * mapped (readable, or writable for a write), else -errno (-ESRCH: gone,
 * -EPERM: not this process's to read).
 */
int64_t lu_caller_read(int pid, uint64_t addr, uint8_t *buf, uint64_t len);
int64_t lu_caller_write(int pid, uint64_t addr, const uint8_t *buf, uint64_t len);

/* counts[use] += frames in [first, end) with that use; counts has LU_USE_MAX slots. */
void lu_frames_histogram(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint64_t *counts);

/* ------------------------------------------------------------------------
 * Page types and reference counts, Xen-style.
 *   type_info: type in bits 28-31, PGT_pinned in bit 27, type count below.
 *   count_info: PGC_allocated in bit 31, general reference count below.
 */
enum lu_pgt {
    LU_PGT_NONE = 0, LU_PGT_L1 = 1, LU_PGT_L2 = 2, LU_PGT_L3 = 3, LU_PGT_L4 = 4,
    LU_PGT_SEG_DESC = 5, LU_PGT_WRITABLE = 7,
    LU_PGT_TYPE_SHIFT = 28,
    LU_PGT_PINNED = 0x08000000,
    LU_PGT_COUNT_MASK = 0x07ffffff,
    LU_PGC_ALLOCATED = 0x80000000,
    LU_PGC_COUNT_MASK = 0x7fffffff
};

/* What the page tables, pins and mappings imply for one frame. */
struct lu_expect {
    uint32_t type_info;
    uint32_t count;
};

enum lu_walk_error {
    LU_WALK_OK = 0,
    LU_WALK_NOT_OWNED = 1,      /* an entry points at a frame the domain does not own */
    LU_WALK_TYPE_CONFLICT = 2,  /* a frame would need two types at once */
    LU_WALK_OUT_OF_RANGE = 3    /* an entry points past the end of RAM */
};

/*
 * Walk a PV domain's page tables from its L4 and add what they imply to an
 * accumulator of {type_info, count} pairs, one per frame, `stride` bytes
 * apart: either a struct lu_expect array (stride 8) or the frame table
 * itself (&ft[0].type_info, stride 16), which is how pinning takes its
 * references.  Adds a type and a general reference on every page table below
 * the root, a general reference on every mapped frame and a writable type
 * reference for each RW mapping.  Each table is descended once, when its type
 * count first becomes non-zero, as Xen validates it.  Stops at the first
 * inconsistency: returns its lu_walk_error with the table frame and entry.
 * A frame is the domain's if its entry in ft names domid, or, when
 * own_starts is not NULL, if it lies in one of the nr_own extents the
 * domain owns (sorted): after a live update the walk runs before every
 * entry is rebuilt, and trusts none of xen#1's.
 */
int lu_pv_walk(const uint8_t *ram, uint64_t nr_frames, const struct lu_frame *ft,
               uint16_t domid, const uint64_t *own_starts, const uint64_t *own_counts,
               uint64_t nr_own, uint64_t l4_mfn, uint8_t *acc, uint64_t stride,
               uint64_t *bad_mfn, uint32_t *bad_entry);

/* Page-table entries for `count` consecutive frames from first_mfn. */
void lu_pt_fill(uint64_t *entries, uint64_t first_mfn, uint64_t count, uint64_t flags);

/* out[i] = first + i for i < count (a P2M or M2P run). */
void lu_fill_run(uint64_t *out, uint64_t first, uint64_t count);

/* out[i] = value for i < count. */
void lu_fill_value(uint64_t *out, uint64_t value, uint64_t count);

/* The first i < count with a[i] != first + i, or count if none. */
uint64_t lu_check_run(const uint64_t *a, uint64_t first, uint64_t count);

/* Expectations every frame starts from: one PGC_allocated reference for
 * frames a domain owns (guest or shared), nothing for the rest. */
void lu_expect_init(const struct lu_frame *ft, struct lu_expect *ex, uint64_t nr_frames);

/*
 * Walk a 4-level IOMMU table from root_mfn; for every present leaf, check
 * that gfn -> mfn equals p2m[gfn] (p2m has nr_gfns entries).  Returns the
 * number of leaves, or -1 with *bad_gfn set at the first mismatch.
 */
int64_t lu_iommu_check(const uint8_t *ram, uint64_t nr_frames, uint64_t root_mfn,
                       const uint64_t *p2m, uint64_t nr_gfns, uint64_t *bad_gfn);

/* Frames whose table entry differs from expectation: up to max_out of them. */
uint64_t lu_frames_compare(const struct lu_frame *ft, const struct lu_expect *ex,
                           uint64_t first, uint64_t end, uint64_t *out, uint64_t max_out);

/* ------------------------------------------------------------------------
 * Guests at work.  Every vCPU runs a deterministic workload: step k writes
 * lu_workload_value(seed, vcpu, k) to slot k mod (ws_pages * 512) of its
 * working set and sets its registers from k, so memory and registers after
 * n steps are known in closed form.  HVM vCPUs read a device-model register
 * every io_every steps; PV frontends send a request to dom0's backend every
 * ring_every steps.  Both wait for dom0, whose vCPUs run the device model and
 * the backends (dom0 software) when scheduled.
 */
enum lu_runstate {
    LU_RUN_RUNNABLE = 0,
    LU_RUN_BLOCKED_IO = 1,     /* HVM: I/O request in flight (not restartable) */
    LU_RUN_BLOCKED_RING = 2    /* PV frontend: ring full, waiting for responses */
};

enum lu_evtchn_abi { LU_EVTCHN_2L = 0, LU_EVTCHN_FIFO = 1 };

enum lu_domtype { LU_DOM_PV = 0, LU_DOM_PVH = 1, LU_DOM_HVM = 2 };

/* Where one event channel's pending/masked bits live in guest memory. */
struct lu_port {
    uint8_t *page;           /* shared info (2-level) or the event array page (FIFO) */
    uint32_t port;
    uint32_t abi;
};

struct lu_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
};

/*
 * A passthrough NIC as its guest's driver reaches it (hw_nic.h): the
 * posted-interrupt descriptor the device's interrupts land in (the CPU
 * takes one when it runs the vCPU), the device's mask register the driver
 * clears to take the next, the NIC's pages in guest memory (page[0] the
 * status block, indices, counts and rings; page[1] the RX buffers; page[2]
 * the TX buffers; 3 is LU_NIC_PAGES), and the IOVA of page[0].
 */
struct lu_nic {
    uint64_t *pi_desc;
    uint32_t *dev_ack;
    uint8_t *page[3];
    uint64_t iova;
};

/* What the driver does when its vCPU runs: set up the rings once; on an
 * interrupt, take it, take every packet the device filled (checked and
 * counted, the buffer posted again), answer each with a packet to send,
 * and unmask the device. */
void lu_nic_drive(struct lu_nic *n);

struct lu_vcpu {
    struct lu_regs regs;
    uint64_t steps;
    uint64_t seed;
    uint32_t domid, vcpu_id, dtype, runstate;
    uint32_t pause_req;      /* honoured between steps */
    uint32_t quiesce_req;    /* pause at the next restartable boundary */
    uint32_t on_cpu;         /* a pCPU is running it */
    uint32_t io_every;       /* HVM device-model reads; 0: none */
    uint32_t ring_every;     /* PV frontend requests; 0: none */
    uint32_t ws_pages;
    uint32_t idle;           /* no workload: never runs steps */
    uint64_t rate;           /* steps per second; 0: as many as it gets */
    uint64_t budget_ns, budget_steps;   /* the rate counts from here */
    uint8_t *ram;
    uint64_t *ws_mfns;       /* ws_pages frames of the working set */
    struct lu_ioreq *ioreq;  /* HVM: this vCPU's slot */
    struct lu_port dm_port;  /* dom0's port for this slot */
    struct lu_port io_port;  /* this vCPU's port for the answer */
    struct lu_sring *ring;   /* PV frontend: the ring it shares with dom0 */
    struct lu_guest_info *info;
    struct lu_port be_port;  /* dom0 backend's port */
    struct lu_port fe_port;  /* this frontend's port */
    /* The drivers of the domain's passthrough NICs (on vCPU 0). */
    struct lu_nic *nics;
    uint32_t nr_nics;
};

/* dom0 software: a device-model client (one HVM vCPU's ioreq slot). */
struct lu_dm_client {
    struct lu_ioreq *ioreq;
    struct lu_port dm_port;
    struct lu_port io_port;
};

/* dom0 software: a backend serving one PV frontend's ring. */
struct lu_backend {
    struct lu_sring *ring;   /* dom0's grant mapping of the frontend's page */
    uint64_t *req_cons;      /* in dom0's own memory */
    struct lu_port be_port;
    struct lu_port fe_port;
    uint32_t connected;
};

struct lu_sched {
    struct lu_vcpu **vcpus;
    uint32_t nr_vcpus;
    uint32_t slice;          /* steps per turn on a pCPU */
    uint32_t stop;
    uint32_t cursor;
    struct lu_dm_client *dm;
    uint32_t nr_dm;
    struct lu_backend *be;
    uint32_t nr_be;
    uint32_t dom0_running;   /* a dom0 vCPU is running dom0's software */
    uint64_t idle_max_ns;    /* longest sleep when nothing can run (short while quiescing) */
};

uint64_t lu_workload_value(uint64_t seed, uint32_t vcpu_id, uint64_t k);
uint64_t lu_dm_read(uint64_t addr);
uint64_t lu_backend_answer(uint64_t value);
uint64_t lu_ring_request(uint64_t seed, uint32_t vcpu_id, uint64_t seq);

/* Registers a vCPU must hold after `steps` steps. */
void lu_workload_regs(uint64_t seed, uint32_t vcpu_id, uint32_t ws_pages, uint32_t io_every,
                      uint32_t ring_every, uint64_t steps, struct lu_regs *out);

/* Working-set slots that differ from what `steps` steps wrote: returns the
 * count and the first one found (slot, value read, value expected). */
uint64_t lu_workload_check(const uint8_t *ram, const uint64_t *ws_mfns, uint32_t ws_pages,
                           uint64_t seed, uint32_t vcpu_id, uint64_t steps,
                           uint64_t *slot, uint64_t *got, uint64_t *want);

/* Event channel bits in guest memory. */
void lu_port_set_pending(const struct lu_port *p);
int lu_port_pending(const struct lu_port *p);
int lu_port_masked(const struct lu_port *p);
void lu_port_clear_pending(const struct lu_port *p);

/* A pCPU: runs vCPUs in turn until s->stop.  Called on its own thread, with
 * the GIL released (cffi does that). */
void lu_sched_run(struct lu_sched *s, uint32_t pcpu);
/* Steps a vCPU with a rate may run at `now` (CLOCK_MONOTONIC ns), which
 * anchors its budget on first use; UINT32_MAX when it has no rate. */
uint32_t lu_rate_allows(struct lu_vcpu *v, uint64_t now);
uint64_t lu_now_ns(void);

/* ------------------------------------------------------------------------
 * The live-update stream: scattered over data pages by xen#1, gathered
 * into one contiguous view ("vmap") and validated whole by xen#2.
 */

/* A fast 64-bit digest (for the breadcrumb's integrity words). */
uint64_t lu_hash64(const uint8_t *data, uint64_t len);

/* Copy len bytes into the frames mfns[0..nr), zero-filling the last one. */
void lu_stream_scatter(uint8_t *ram, const uint64_t *mfns, uint64_t nr,
                       const uint8_t *data, uint64_t len);

/* Copy the frames mfns[0..nr) into out (nr * 4096 bytes). */
void lu_stream_gather(const uint8_t *ram, const uint64_t *mfns, uint64_t nr, uint8_t *out);

enum lu_stream_error {
    LU_STREAM_OK = 0,
    LU_STREAM_TRUNCATED = -1,      /* a header or record runs past the end */
    LU_STREAM_BAD_HEADER = -2,     /* image header: marker, id, version, options */
    LU_STREAM_UNKNOWN_RECORD = -3, /* a mandatory record type this image cannot restore */
    LU_STREAM_BAD_PADDING = -4,    /* non-zero bytes after a record body */
    LU_STREAM_TOO_LARGE = -5,      /* a record over 128 MiB */
    LU_STREAM_BAD_DOMAIN = -6,     /* domain header: type or page shift */
    LU_STREAM_NO_END = -7,         /* a section without its END record */
    LU_STREAM_LU_ONLY_HEADER = -8, /* the system section does not start with LU_VERSION */
    LU_STREAM_RESERVED = -9        /* a header's reserved bytes are not zero (offset: the field's) */
};

/*
 * Check the framing of a whole stream: image header, the system section
 * (LU_VERSION first, up to END), then domain sections (domain header,
 * records, END) to the last byte.  known[] lists the record types this
 * hypervisor can restore; unknown optional ones are allowed.  Returns the
 * number of records, or an lu_stream_error with the offset and type of the
 * record at fault.
 */
int64_t lu_stream_validate(const uint8_t *buf, uint64_t len, const uint32_t *known,
                           uint32_t nr_known, uint64_t *bad_offset, uint32_t *bad_type);

/* ------------------------------------------------------------------------
 * xen#1's side of a live update, inside the blackout: quiescing, saving and
 * the image check in one call each, not one per vCPU, frame or extent.
 */

/*
 * Do for every vCPU not on a pCPU what a pCPU does when it picks one up:
 * one with quiesce_req set gets its pause request unless it has an I/O
 * request in flight.  Returns how many are not yet paused and off their
 * pCPU; *first is the index of the first of them (n if none).
 */
uint32_t lu_quiesce_sweep(struct lu_vcpu **vcpus, uint32_t n, uint32_t *first);

/*
 * A 64-bit digest of a large buffer (the staged kexec image) at memory
 * speed: four independent lanes of lu_hash64's mixing, folded at the end.
 * For "has any byte changed", not for the stream (that is lu_hash64).
 */
uint64_t lu_digest64(const uint8_t *data, uint64_t len);

/*
 * The body items of an LU_PV_PAGE_TYPES record for the frames owned by
 * `owner` in the extents [starts[i], starts[i] + counts[i]), in extent
 * order: every page-table or descriptor frame (as lu_frames_typed) as 16
 * little-endian bytes {u64 mfn, u32 type (PGT_* >> LU_PGT_TYPE_SHIFT),
 * u32 flags (pinned_flag if PGT_pinned, else 0)}.  Writes up to max_out
 * items to out; returns how many there are.
 */
uint64_t lu_save_pv_page_types(const struct lu_frame *ft, const uint64_t *starts,
                               const uint64_t *counts, uint64_t nr_extents, uint16_t owner,
                               uint32_t pinned_flag, uint8_t *out, uint64_t max_out);

/*
 * Just before xen#1 execs: a child sharing its address space keeps it
 * alive across the execve, so that its teardown happens after the jump,
 * not inside the blackout (lu_exec.c).  Returns the child's pid, or
 * -errno; the child exits once the exec has happened, and the process
 * (xen#2 by then) reaps it.
 */
int lu_hold_address_space(void);

/* ------------------------------------------------------------------------
 * xen#2's per-page records in one pass each (lu_restore.c).  items: the
 * body of an LU_PV_PAGE_TYPES record after its header, n items of 16
 * little-endian bytes {u64 mfn, u32 type, u32 flags}.
 */

/*
 * Check every item: its frame lies in one of the domain's RAM extents
 * (starts[] sorted, nr_extents of them) and its type is L1..L4 or a
 * descriptor table.  Counts the L4s whose flags have pinned_flag, and
 * gives the first one's frame.  Returns the index of the first item that
 * fails, or -1.
 */
int64_t lu_pv_types_check(const uint8_t *items, uint64_t n, const uint64_t *starts,
                          const uint64_t *counts, uint64_t nr_extents, uint32_t pinned_flag,
                          uint64_t *pinned_mfn, uint64_t *nr_pinned);

/* Give each item's frame its type (counts come later, from the walk);
 * the items must have passed lu_pv_types_check. */
void lu_pv_types_apply(struct lu_frame *ft, const uint8_t *items, uint64_t n);

/* The frames of the items of one type, in item order: up to max_out in
 * out; returns how many there are. */
uint64_t lu_pv_types_select(const uint8_t *items, uint64_t n, uint32_t type,
                            uint64_t *out, uint64_t max_out);

/* The benchmark's memory bandwidth probes (bench/core.py): a store of len
 * bytes, and a streaming read of them (-> a fold of what was read, so that
 * the read is done). */
void lu_membw_fill(uint8_t *buf, uint64_t len, uint8_t byte);
uint64_t lu_membw_read(const uint8_t *buf, uint64_t len);

#endif /* LU_CORE_H */
