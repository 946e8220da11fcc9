/*
 * The parts of Xen's public ABI (xen/include/public/kexec.h, version.h,
 * memory.h, xen.h's multicall entry and the privcmd ioctl argument) that
 * kexec-lu and hyperv-sim exchange.
 * Layouts are Xen's own for x86-64; tests/test_abi_layout.py compiles
 * Debian's libxen-dev headers and proves every size and offset equal.
 * This file is also given to cffi's cdef(), so it holds declarations only.
 */

typedef struct xen_kexec_range {
    int range;
    int nr;
    unsigned long size;
    unsigned long start;
} xen_kexec_range_t;

/* XEN_GUEST_HANDLE_64(void) is a u64-aligned 64-bit pointer on x86-64. */
typedef struct xen_kexec_segment {
    uint64_t buf;
    uint64_t buf_size;
    uint64_t dest_maddr;
    uint64_t dest_size;
} xen_kexec_segment_t;

typedef struct xen_kexec_load {
    uint8_t  type;
    uint8_t  _pad;
    uint16_t arch;
    uint32_t nr_segments;
    uint64_t segments;      /* XEN_GUEST_HANDLE_64(xen_kexec_segment_t) */
    uint64_t entry_maddr;
} xen_kexec_load_t;

typedef struct xen_kexec_exec {
    int type;
} xen_kexec_exec_t;

typedef struct xen_kexec_unload {
    uint8_t type;
} xen_kexec_unload_t;

typedef struct xen_kexec_status {
    uint8_t type;
} xen_kexec_status_t;

/* One call of a multicall (public/xen.h): result written back per entry. */
typedef struct multicall_entry {
    uint64_t op;
    uint64_t result;
    uint64_t args[6];
} multicall_entry_t;

/* XENMEM_machine_memory_map's argument (public/memory.h): buffer holds
 * nr_entries E820 entries on the way in; nr_entries is the count written
 * on the way out. */
typedef struct xen_memory_map {
    unsigned int nr_entries;
    uint64_t buffer;        /* XEN_GUEST_HANDLE(void) */
} xen_memory_map_t;

/* Linux's struct privcmd_hypercall (include/xen/sys/privcmd.h). */
typedef struct privcmd_hypercall {
    uint64_t op;
    uint64_t arg[5];
} privcmd_hypercall_t;

/* XENVER_* argument buffers (public/version.h). */
typedef char xen_extraversion_t[16];
typedef char xen_commandline_t[1024];
typedef struct xen_build_id {
    uint32_t len;
    unsigned char buf[];
} xen_build_id_t;
