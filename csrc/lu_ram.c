/* Host-RAM file operations that Python's standard library lacks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#include "lu_core.h"

int lu_ram_scrub(int fd, uint64_t offset, uint64_t len)
{
    /* Punching keeps the file's size and makes the range read as zeros:
     * Xen's page scrubbing, at no disk cost for a sparse RAM file. */
    if ( fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   (off_t)offset, (off_t)len) < 0 )
        return -errno;
    return 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22       /* Linux 5.14 */
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Populated this much at a time: the address space's lock is released in
 * between, so the rest of the process can still map memory meanwhile. */
#define LU_POPULATE_CHUNK (16ull << 20)

int lu_ram_populate(uint8_t *addr, uint64_t len, int write)
{
    /* Page-table entries for a range about to be written (or read), in a
     * few calls rather than one fault per page; no byte changes.  Called
     * without the GIL, so another thread can take them while Python runs.
     * A write populate dirties every page (the file's writeback then has
     * all of them to write): only for ranges that will all be written. */
    uint64_t done, n;

    for ( done = 0; done < len; done += n )
    {
        n = len - done < LU_POPULATE_CHUNK ? len - done : LU_POPULATE_CHUNK;
        if ( madvise(addr + done, (size_t)n, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ) < 0 )
            return -errno;
    }
    return 0;
}
