/* Host-RAM file operations that Python's standard library lacks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>

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
