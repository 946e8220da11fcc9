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

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23      /* Linux 5.14 */
#endif

int lu_ram_populate(uint8_t *addr, uint64_t len)
{
    /* Page-table entries for a range about to be written, in one call
     * rather than one fault per page; no byte changes.  Called without
     * the GIL, so another thread can take them while Python runs. */
    if ( madvise(addr, (size_t)len, MADV_POPULATE_WRITE) < 0 )
        return -errno;
    return 0;
}
