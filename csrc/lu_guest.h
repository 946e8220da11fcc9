/*
 * What guests see: the structures and constants that live in guest memory,
 * read and written there by guest software, dom0's device model and its
 * backends.  This is the simulator's counterpart of Xen's public headers
 * (public/hvm/ioreq.h, public/io/ring.h).  Guest memory survives a live
 * update unchanged, so these layouts are an ABI shared by the guests and by
 * both hypervisors.  The hypervisor's private structures are in lu_core.h,
 * which includes this file.
 *
 * Needs only <stdint.h>.  No host pointers, no hypervisor bookkeeping, no
 * functions.  cffi's cdef() reads this file as is (csrc/build_core.py drops
 * the include guard), so: declarations only, constants as enums.
 * The event-channel bits in guest memory are Xen's own layout (shared_info's
 * bitmaps, FIFO event words); lu_workload.c defines them where it uses them.
 */
#ifndef LU_GUEST_H
#define LU_GUEST_H

/* x86-64 page-table entry bits, as a PV guest writes them in its own page
 * tables (the hypervisor walks those, and its IOMMU tables, with them). */
enum lu_pte {
    LU_PTE_PRESENT = 1, LU_PTE_RW = 2,
    LU_PTE_ENTRIES = 512
};

/* Xen's struct ioreq (public/hvm/ioreq.h), 32 bytes: one per HVM vCPU in
 * the ioreq page, written by the vCPU and answered by dom0's device model. */
struct lu_ioreq {
    uint64_t addr;
    uint64_t data;
    uint32_t count;
    uint32_t size;
    uint32_t vp_eport;
    uint16_t _pad0;
    uint8_t  state:4;
    uint8_t  data_is_ptr:1;
    uint8_t  dir:1;
    uint8_t  df:1;
    uint8_t  _pad1:1;
    uint8_t  type;
};

enum lu_ioreq_state {
    LU_IOREQ_NONE = 0, LU_IOREQ_READY = 1, LU_IOREQ_INPROCESS = 2, LU_IORESP_READY = 3,
    LU_IOREQ_TYPE_COPY = 1, LU_IOREQ_READ = 1,
    LU_IO_MMIO_BASE = 0xfed00000
};

/* A shared ring (Xen's io/ring.h layout): 64-byte header, 16-byte slots.
 * In a PV frontend's page, granted to dom0's backend. */
struct lu_sring {
    uint32_t req_prod, req_event, rsp_prod, rsp_event;
    uint8_t  pad[48];
    uint64_t ring[256];      /* LU_RING_SIZE slots of {u64 id, u64 value} */
};
enum lu_ring { LU_RING_SIZE = 128 };

/* Per-vCPU clock a guest keeps: when its last step ran, and the longest
 * wait it has seen between two steps (what a guest notices of a pause);
 * and, as Xen keeps a vCPU's runstate times in a guest-registered area,
 * the time the hypervisor has run it, across live updates. */
struct lu_guest_vcpu {
    uint64_t last_step_ns;
    uint64_t max_gap_ns;
    uint64_t running_ns;
};

/* Software state a guest keeps in its own memory (its "info page", gfn 0):
 * what its code needs to carry on, whichever hypervisor runs it. */
struct lu_guest_info {
    uint64_t magic;          /* GUEST_MAGIC (hyperv_sim/guest.py) */
    uint64_t seed;
    uint64_t rsp_cons;       /* PV frontend: responses consumed */
    uint64_t rsp_errors;     /* responses that did not match their request */
    uint64_t ws_base_gfn;    /* working sets: vCPU i at ws_base_gfn + i * ws_pages */
    uint32_t ws_pages;
    uint32_t io_every;
    uint32_t ring_every;
    uint32_t ring_gfn;
    uint32_t fe_port;        /* PV frontend: its event channel */
    uint32_t flags;          /* LU_GUEST_IDLE */
    uint64_t backend_gfn;    /* dom0: first page of its backends' state */
    uint32_t backend_pages;
    uint32_t rate;           /* steps per second per vCPU its kernel allows; 0: flat out */
    struct lu_guest_vcpu vcpu[128];
};
enum lu_guest_flags { LU_GUEST_IDLE = 1 };

#endif /* LU_GUEST_H */
