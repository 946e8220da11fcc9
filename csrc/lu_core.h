/*
 * The hypervisor's C core: frame-table scanning and marking, host-RAM
 * scrubbing.  Given to cffi's cdef() as is, so: declarations only, constants
 * as enums, no preprocessor logic.
 */

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
    LU_USE_MAX = 9
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

/* counts[use] += frames in [first, end) with that use; counts has LU_USE_MAX slots. */
void lu_frames_histogram(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint64_t *counts);
