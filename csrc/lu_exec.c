/*
 * The jump into xen#2 without paying for xen#1's death inside the blackout.
 *
 * A real Xen abandons its old page tables when it jumps to the new image.
 * A process that calls execve(2) first tears down its whole address space,
 * and for a big host (a mapped frame table and M2P of hundreds of MiB) that
 * takes tens of milliseconds.  So, just before the exec, xen#1 starts a
 * child that shares its address space (CLONE_VM) and does nothing but wait:
 * the exec then only drops a reference, and the child, the last user, tears
 * the old address space down after the exec, alongside xen#2's start.  The
 * child touches nothing of xen#1's: it blocks signals, closes every file
 * but one pipe, and exits when the pipe's write end, which xen#1 holds
 * close-on-exec, goes away.  Its parent is the same process, so xen#2 reaps
 * it.  It makes only system calls: it shares xen#1's memory (a failing one
 * writes errno, which is xen#1's thread's and about to be exec'd away).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lu_core.h"

#define HOLDER_STACK (64 * 1024)

static int hold_until_exec(void *arg)
{
    long rfd = (long)(intptr_t)arg;
    uint64_t all = ~0ull;
    char c;

    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, sizeof(all));
    /* Every descriptor but the pipe's read end (0-2 included). */
    if ( rfd > 0 )
        syscall(SYS_close_range, 0, rfd - 1, 0);
    syscall(SYS_close_range, rfd + 1, ~0u, 0);
    while ( syscall(SYS_read, rfd, &c, 1) > 0 )
        ;
    syscall(SYS_exit, 0);
    return 0;
}

int lu_hold_address_space(void)
{
    int fds[2];
    char *stack;
    pid_t pid;

    if ( pipe2(fds, O_CLOEXEC) < 0 )
        return -errno;
    stack = malloc(HOLDER_STACK);       /* freed with the address space */
    if ( !stack )
    {
        close(fds[0]);
        close(fds[1]);
        return -ENOMEM;
    }
    pid = clone(hold_until_exec, stack + HOLDER_STACK, CLONE_VM | SIGCHLD,
                (void *)(intptr_t)fds[0]);
    if ( pid < 0 )
    {
        int err = errno;

        close(fds[0]);
        close(fds[1]);
        return -err;
    }
    close(fds[0]);
    return pid;     /* fds[1] stays open until execve closes it */
}
