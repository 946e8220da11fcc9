/* The calling process's memory, as Xen's copy_from_guest/copy_to_guest
 * see a PV guest's: read and written at the addresses a hypercall's
 * arguments hold.  A privcmd caller is another process, so the kernel
 * copies (process_vm_readv/writev); a copy that stops short is a bad
 * address. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "lu_core.h"

static int64_t lu_caller_copy(int pid, uint64_t addr, uint8_t *buf, uint64_t len, int write)
{
    struct iovec local = { .iov_base = buf, .iov_len = (size_t)len };
    struct iovec remote = { .iov_base = (void *)(uintptr_t)addr, .iov_len = (size_t)len };
    ssize_t n;

    if ( len == 0 )
        return 0;
    if ( addr + len < addr )
        return -EFAULT;                 /* wraps: no such range in any process */
    n = write ? process_vm_writev(pid, &local, 1, &remote, 1, 0)
              : process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if ( n < 0 )
        return -errno;
    return (uint64_t)n == len ? 0 : -EFAULT;
}

int64_t lu_caller_read(int pid, uint64_t addr, uint8_t *buf, uint64_t len)
{
    return lu_caller_copy(pid, addr, buf, len, 0);
}

int64_t lu_caller_write(int pid, uint64_t addr, const uint8_t *buf, uint64_t len)
{
    return lu_caller_copy(pid, addr, (uint8_t *)buf, len, 1);
}
