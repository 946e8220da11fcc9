/* The privcmd bridge: preloaded (LD_PRELOAD) into an unmodified Xen tool by
 * `hyperv-sim run`, it makes the process see a PV control domain of the
 * simulated host named by $HYPERV_SIM_BRIDGE (its state directory):
 *
 *  - /proc/xen and /dev/xen are looked up in STATE/bridge/ instead, where
 *    `hyperv-sim run` put proc-xen/capabilities ("control_d") and
 *    dev-xen/privcmd, and no dev-xen/hypercall, so libxencall falls back to
 *    ordinary memory for its hypercall buffers;
 *  - IOCTL_PRIVCMD_HYPERCALL on that privcmd goes to the host's socket as
 *    the 48-byte struct privcmd_hypercall (the hypervisor reads and writes
 *    this process's memory at the addresses its arguments hold); every
 *    other ioctl on it is -ENOTTY, as Linux's driver answers one it lacks;
 *  - Xen's forced-emulation prefix (ud2a; .ascii "xen"; cpuid), with which
 *    a PV guest asks for Xen's CPUID leaves, is emulated on SIGILL; any
 *    other SIGILL reaches the handler the program installed.
 *
 * And it keeps the tool away from this machine: network-interface
 * changes, reboot and kexec_load are refused with a message, and the
 * capabilities they need are dropped for good (the kernel's guarantee,
 * for whatever the tool runs, statically linked or not).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define BRIDGE_ENV      "HYPERV_SIM_BRIDGE"
#define SAY             "hyperv-sim run: "

/* Xen's and Linux's numbers (xen/include/public, include/uapi/xen/privcmd.h). */
#define PRIVCMD_HYPERCALL_SIZE  48      /* u64 op; u64 arg[5] */
#define IOCTL_PRIVCMD_HYPERCALL ((PRIVCMD_HYPERCALL_SIZE << 16) | ('P' << 8) | 0)
#define HYPERVISOR_memory_op    12
#define HYPERVISOR_xen_version  17
#define XENVER_version          0
#define XENMEM_maximum_ram_page 2
#define XEN_CPUID_FIRST_LEAF    0x40000000u
#define XEN_CPUID_MAX_NUM_LEAVES 5
#define XEN_CPUID_SIGNATURE_EBX 0x566e6558u     /* "XenV" */
#define XEN_CPUID_SIGNATURE_ECX 0x65584d4du     /* "MMXe" */
#define XEN_CPUID_SIGNATURE_EDX 0x4d4d566eu     /* "nVMM" */
#define XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD (1u << 0)
#define PR_SET_PTRACER_YAMA     0x59616d61

/* How long a hypercall waits for a host between two hypervisors (the
 * socket is gone for the exec of a live update) or busy, before it fails. */
#define PATIENCE_NS     (30ull * 1000000000ull)

static int active;                      /* $HYPERV_SIM_BRIDGE was set */
static char state_dir[PATH_MAX];
static char tree[PATH_MAX];             /* STATE/bridge */
static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static dev_t privcmd_dev;
static ino_t privcmd_ino;
static int yama_restricted;             /* ptrace_scope 1: grant the hypervisor access */
static pid_t granted_pid;
static struct sigaction program_sigill; /* what the program asked SIGILL to do */

#define REAL(ret, name, args)                                           \
    static ret (*real_##name) args;                                     \
    static ret (*get_##name(void)) args                                 \
    {                                                                   \
        if ( !real_##name )                                             \
            real_##name = (ret (*) args)dlsym(RTLD_NEXT, #name);        \
        return real_##name;                                             \
    }

/* ---------------------------------------------------------------- messages */

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    memcpy(line, SAY, sizeof(SAY) - 1);
    va_start(ap, fmt);
    n = vsnprintf(line + sizeof(SAY) - 1, sizeof(line) - sizeof(SAY), fmt, ap);
    va_end(ap);
    if ( n < 0 )
        return;
    n += sizeof(SAY) - 1;
    if ( n > (int)sizeof(line) - 2 )
        n = sizeof(line) - 2;
    line[n++] = '\n';
    if ( write(STDERR_FILENO, line, n) < 0 )
        return;                         /* nowhere else to say it */
}

/* ---------------------------------------------------------------- confinement */

/* Drop what changing network interfaces (CAP_NET_ADMIN) and rebooting or
 * kexec'ing this machine (CAP_SYS_BOOT) need, from every capability set,
 * for good: nothing the tool or its children run can regain them. */
static void confine(void)
{
    struct __user_cap_header_struct head = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    static const int dropped[] = { CAP_NET_ADMIN, CAP_SYS_BOOT };
    unsigned int i;

    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for ( i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++ )
        prctl(PR_CAPBSET_DROP, dropped[i], 0, 0, 0);   /* EPERM: not ours to drop, nor to use */
    if ( syscall(SYS_capget, &head, data) )
        return;
    for ( i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++ )
    {
        uint32_t bit = 1u << (dropped[i] % 32);
        unsigned int word = dropped[i] / 32;

        data[word].effective &= ~bit;
        data[word].permitted &= ~bit;
        data[word].inheritable &= ~bit;
    }
    syscall(SYS_capset, &head, data);
}

/* ---------------------------------------------------------------- paths */

/* /proc/xen[/...] and /dev/xen[/...] as the bridge's tree has them. */
static const char *redirect(const char *path, char *buf, size_t len)
{
    static const struct { const char *from, *to; } map[] = {
        { "/proc/xen", "/proc-xen" },
        { "/dev/xen", "/dev-xen" },
    };
    unsigned int i;

    if ( !active || !path )
        return path;
    for ( i = 0; i < sizeof(map) / sizeof(map[0]); i++ )
    {
        size_t n = strlen(map[i].from);

        if ( strncmp(path, map[i].from, n) == 0 && (path[n] == '\0' || path[n] == '/') )
        {
            if ( (size_t)snprintf(buf, len, "%s%s%s", tree, map[i].to, path + n) >= len )
                return path;            /* too long to redirect: the real one answers */
            return buf;
        }
    }
    return path;
}

#define OPEN_MODE(flags, mode)                                          \
    do {                                                                \
        if ( ((flags) & O_CREAT) || ((flags) & __O_TMPFILE) == __O_TMPFILE ) { \
            va_list ap;                                                 \
            va_start(ap, flags);                                        \
            mode = va_arg(ap, mode_t);                                  \
            va_end(ap);                                                 \
        }                                                               \
    } while ( 0 )

REAL(int, open, (const char *, int, ...))
REAL(int, open64, (const char *, int, ...))
REAL(int, openat, (int, const char *, int, ...))
REAL(int, openat64, (int, const char *, int, ...))
REAL(int, __open_2, (const char *, int))
REAL(int, __open64_2, (const char *, int))
REAL(int, __openat_2, (int, const char *, int))
REAL(int, __openat64_2, (int, const char *, int))
REAL(FILE *, fopen, (const char *, const char *))
REAL(FILE *, fopen64, (const char *, const char *))
REAL(DIR *, opendir, (const char *))
REAL(int, access, (const char *, int))
REAL(int, faccessat, (int, const char *, int, int))
REAL(int, euidaccess, (const char *, int))
REAL(int, stat, (const char *, struct stat *))
REAL(int, stat64, (const char *, struct stat64 *))
REAL(int, lstat, (const char *, struct stat *))
REAL(int, lstat64, (const char *, struct stat64 *))
REAL(int, fstatat, (int, const char *, struct stat *, int))
REAL(int, fstatat64, (int, const char *, struct stat64 *, int))
REAL(int, statx, (int, const char *, int, unsigned int, struct statx *))
REAL(int, __xstat, (int, const char *, struct stat *))
REAL(int, __xstat64, (int, const char *, struct stat64 *))
REAL(int, __lxstat, (int, const char *, struct stat *))
REAL(int, __lxstat64, (int, const char *, struct stat64 *))
REAL(int, __fxstatat, (int, int, const char *, struct stat *, int))
REAL(int, __fxstatat64, (int, int, const char *, struct stat64 *, int))

/* A wrapper whose libc lacks the real function fails as a missing one would. */
#define CALL(name, ...)                                                 \
    (get_##name() ? get_##name()(__VA_ARGS__) : (errno = ENOSYS, -1))

int open(const char *path, int flags, ...)
{
    char b[PATH_MAX];
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return CALL(open, redirect(path, b, sizeof(b)), flags, mode);
}

int open64(const char *path, int flags, ...)
{
    char b[PATH_MAX];
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return CALL(open64, redirect(path, b, sizeof(b)), flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    char b[PATH_MAX];
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return CALL(openat, dirfd, redirect(path, b, sizeof(b)), flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    char b[PATH_MAX];
    mode_t mode = 0;

    OPEN_MODE(flags, mode);
    return CALL(openat64, dirfd, redirect(path, b, sizeof(b)), flags, mode);
}

int __open_2(const char *path, int flags)
{
    char b[PATH_MAX];
    return CALL(__open_2, redirect(path, b, sizeof(b)), flags);
}

int __open64_2(const char *path, int flags)
{
    char b[PATH_MAX];
    return CALL(__open64_2, redirect(path, b, sizeof(b)), flags);
}

int __openat_2(int dirfd, const char *path, int flags)
{
    char b[PATH_MAX];
    return CALL(__openat_2, dirfd, redirect(path, b, sizeof(b)), flags);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
    char b[PATH_MAX];
    return CALL(__openat64_2, dirfd, redirect(path, b, sizeof(b)), flags);
}

FILE *fopen(const char *path, const char *mode)
{
    char b[PATH_MAX];
    return get_fopen() ? get_fopen()(redirect(path, b, sizeof(b)), mode) : NULL;
}

FILE *fopen64(const char *path, const char *mode)
{
    char b[PATH_MAX];
    return get_fopen64() ? get_fopen64()(redirect(path, b, sizeof(b)), mode) : NULL;
}

DIR *opendir(const char *path)
{
    char b[PATH_MAX];
    return get_opendir() ? get_opendir()(redirect(path, b, sizeof(b))) : NULL;
}

int access(const char *path, int mode)
{
    char b[PATH_MAX];
    return CALL(access, redirect(path, b, sizeof(b)), mode);
}

int faccessat(int dirfd, const char *path, int mode, int flags)
{
    char b[PATH_MAX];
    return CALL(faccessat, dirfd, redirect(path, b, sizeof(b)), mode, flags);
}

int euidaccess(const char *path, int mode)
{
    char b[PATH_MAX];
    return CALL(euidaccess, redirect(path, b, sizeof(b)), mode);
}

int stat(const char *path, struct stat *st)
{
    char b[PATH_MAX];
    return CALL(stat, redirect(path, b, sizeof(b)), st);
}

int stat64(const char *path, struct stat64 *st)
{
    char b[PATH_MAX];
    return CALL(stat64, redirect(path, b, sizeof(b)), st);
}

int lstat(const char *path, struct stat *st)
{
    char b[PATH_MAX];
    return CALL(lstat, redirect(path, b, sizeof(b)), st);
}

int lstat64(const char *path, struct stat64 *st)
{
    char b[PATH_MAX];
    return CALL(lstat64, redirect(path, b, sizeof(b)), st);
}

int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    char b[PATH_MAX];
    return CALL(fstatat, dirfd, redirect(path, b, sizeof(b)), st, flags);
}

int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    char b[PATH_MAX];
    return CALL(fstatat64, dirfd, redirect(path, b, sizeof(b)), st, flags);
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *st)
{
    char b[PATH_MAX];
    return CALL(statx, dirfd, redirect(path, b, sizeof(b)), flags, mask, st);
}

/* The stat entry points of glibc before 2.33, for tools built against it. */
int __xstat(int ver, const char *path, struct stat *st)
{
    char b[PATH_MAX];
    return CALL(__xstat, ver, redirect(path, b, sizeof(b)), st);
}

int __xstat64(int ver, const char *path, struct stat64 *st)
{
    char b[PATH_MAX];
    return CALL(__xstat64, ver, redirect(path, b, sizeof(b)), st);
}

int __lxstat(int ver, const char *path, struct stat *st)
{
    char b[PATH_MAX];
    return CALL(__lxstat, ver, redirect(path, b, sizeof(b)), st);
}

int __lxstat64(int ver, const char *path, struct stat64 *st)
{
    char b[PATH_MAX];
    return CALL(__lxstat64, ver, redirect(path, b, sizeof(b)), st);
}

int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    char b[PATH_MAX];
    return CALL(__fxstatat, ver, dirfd, redirect(path, b, sizeof(b)), st, flags);
}

int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    char b[PATH_MAX];
    return CALL(__fxstatat64, ver, dirfd, redirect(path, b, sizeof(b)), st, flags);
}

/* ---------------------------------------------------------------- the host */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void pause_briefly(void)
{
    struct timespec ts = { 0, 20 * 1000 * 1000 };

    nanosleep(&ts, NULL);
}

/* The same trust as the Python client's: the directory and the socket are
 * this user's or root's, the directory writable by nobody else. */
static int untrusted(const char *path, int want_socket)
{
    struct stat st;

    if ( get_lstat() == NULL || get_lstat()(path, &st) )
        return 0;                       /* connect() says what is missing */
    if ( st.st_uid != geteuid() && st.st_uid != 0 )
    {
        say("%s belongs to uid %u, not to you: refusing to trust it", path, (unsigned)st.st_uid);
        return 1;
    }
    if ( !want_socket && (st.st_mode & (S_IWGRP | S_IWOTH)) )
    {
        say("%s is writable by others: refusing to trust it", path);
        return 1;
    }
    if ( want_socket && !S_ISSOCK(st.st_mode) )
    {
        say("%s is not a socket: refusing to use it", path);
        return 1;
    }
    return 0;
}

static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;

    while ( got < len )
    {
        ssize_t n = read(fd, (char *)buf + got, len - got);

        if ( n < 0 && errno == EINTR )
            continue;
        if ( n <= 0 )
            return -1;
        got += n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    size_t done = 0;

    while ( done < len )
    {
        ssize_t n = write(fd, (const char *)buf + done, len - done);

        if ( n < 0 && errno == EINTR )
            continue;
        if ( n <= 0 )
            return -1;
        done += n;
    }
    return 0;
}

/* One exchange: 1 and the return value, 0 to retry later (no hypervisor
 * between two, or a busy one), -1 and a message when it cannot be done.
 * Only async-signal-safe calls: the CPUID emulation calls it from its
 * SIGILL handler. */
static int exchange(const uint8_t call[PRIVCMD_HYPERCALL_SIZE], int64_t *ret)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct ucred peer;
    socklen_t plen = sizeof(peer);
    uint8_t frame[4 + 1 + PRIVCMD_HYPERCALL_SIZE];
    uint8_t head[5];
    uint32_t len = 1 + PRIVCMD_HYPERCALL_SIZE;
    int s, result = -1;

    if ( untrusted(state_dir, 0) || untrusted(socket_path, 1) )
        return -1;
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if ( s < 0 )
    {
        say("cannot make a socket: %s", strerror(errno));
        return -1;
    }
    memcpy(addr.sun_path, socket_path, sizeof(addr.sun_path));
    if ( connect(s, (struct sockaddr *)&addr, sizeof(addr)) )
    {
        int e = errno;

        close(s);
        if ( e == ENOENT || e == ECONNREFUSED || e == EAGAIN )
            return 0;
        say("cannot connect to %s: %s", socket_path, strerror(e));
        return -1;
    }
    if ( getsockopt(s, SOL_SOCKET, SO_PEERCRED, &peer, &plen) )
        goto out;
    if ( peer.uid != geteuid() && peer.uid != 0 )
    {
        say("the process answering on %s runs as uid %u, not as you or root: refusing to "
            "trust it", socket_path, (unsigned)peer.uid);
        goto out;
    }
    if ( yama_restricted && peer.pid != granted_pid )
    {
        prctl(PR_SET_PTRACER_YAMA, (unsigned long)peer.pid, 0, 0, 0);
        granted_pid = peer.pid;
    }
    memcpy(frame, &len, 4);             /* little-endian: x86 only */
    frame[4] = 'H';
    memcpy(frame + 5, call, PRIVCMD_HYPERCALL_SIZE);
    if ( write_full(s, frame, sizeof(frame)) || read_full(s, head, sizeof(head)) )
    {
        result = 0;                     /* hung up: it is going away, or turned us away */
        goto out;
    }
    memcpy(&len, head, 4);
    if ( head[4] == 'H' && len == 1 + sizeof(*ret) )
    {
        if ( read_full(s, ret, sizeof(*ret)) == 0 )
            result = 1;
    }
    else if ( head[4] == 'T' )
        result = 0;                     /* "busy, retry" is the one JSON answer to a hypercall */
    else
        say("the hypervisor on %s answered a hypercall with a '%c' frame", socket_path, head[4]);
 out:
    close(s);
    return result;
}

/* -> the hypercall's return value, or -ENXIO (and a message) when no
 * hypervisor answers within PATIENCE_NS. */
static int64_t hypercall(const uint8_t call[PRIVCMD_HYPERCALL_SIZE])
{
    uint64_t deadline = now_ns() + PATIENCE_NS;
    int64_t ret;

    for ( ;; )
    {
        int r = exchange(call, &ret);

        if ( r > 0 )
            return ret;
        if ( r < 0 )
            return -ENXIO;
        if ( now_ns() > deadline )
        {
            say("no hypervisor answers on %s", socket_path);
            return -ENXIO;
        }
        pause_briefly();
    }
}

static int64_t hypercall2(uint64_t op, uint64_t a0, uint64_t a1)
{
    uint64_t call[6] = { op, a0, a1, 0, 0, 0 };

    return hypercall((const uint8_t *)call);
}

/* ---------------------------------------------------------------- ioctl */

REAL(int, ioctl, (int, unsigned long, ...))

static int is_privcmd(int fd)
{
    struct stat st;

    return active && privcmd_ino && fstat(fd, &st) == 0
           && st.st_dev == privcmd_dev && st.st_ino == privcmd_ino;
}

/* Socket ioctls that only read an interface's state (linux/sockios.h);
 * every other one in 0x890b-0x89ff, and every wireless one, changes it. */
static int changes_an_interface(unsigned long req)
{
    static const unsigned long reads[] = {
        0x8910 /* SIOCGIFNAME */, 0x8912 /* SIOCGIFCONF */, 0x8913 /* SIOCGIFFLAGS */,
        0x8915 /* SIOCGIFADDR */, 0x8917 /* SIOCGIFDSTADDR */, 0x8919 /* SIOCGIFBRDADDR */,
        0x891b /* SIOCGIFNETMASK */, 0x891d /* SIOCGIFMETRIC */, 0x891f /* SIOCGIFMEM */,
        0x8921 /* SIOCGIFMTU */, 0x8927 /* SIOCGIFHWADDR */, 0x8933 /* SIOCGIFINDEX */,
        0x8935 /* SIOCGIFPFLAGS */, 0x8938 /* SIOCGIFCOUNT */, 0x8942 /* SIOCGIFTXQLEN */,
    };
    unsigned int i;

    req &= 0xffffffffu;
    if ( (req & 0xff00) == 0x8b00 && req <= 0x8bff )
        return 1;
    if ( req < 0x890b || req > 0x89ff )
        return 0;
    for ( i = 0; i < sizeof(reads) / sizeof(reads[0]); i++ )
        if ( req == reads[i] )
            return 0;
    return 1;
}

int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);

    if ( changes_an_interface(req) )
    {
        char name[IFNAMSIZ + 1] = "";
        struct iovec local = { name, IFNAMSIZ }, remote = { arg, IFNAMSIZ };

        /* The ifreq's name, read as the kernel would (a bad pointer reads nothing). */
        if ( process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != IFNAMSIZ )
            strcpy(name, "?");
        name[IFNAMSIZ] = '\0';
        if ( (req & 0xffffffffu) == 0x8914 /* SIOCSIFFLAGS */ )
            say("refused to change the flags of network interface %s on this machine (kexec "
                "takes interfaces down before an exec unless -x is given)", name);
        else
            say("refused to change network interface %s on this machine (ioctl 0x%lx)",
                name, req);
        errno = EPERM;
        return -1;
    }
    if ( is_privcmd(fd) )
    {
        uint8_t call[PRIVCMD_HYPERCALL_SIZE];
        struct iovec local = { call, sizeof(call) }, remote = { arg, sizeof(call) };
        int64_t ret;

        if ( (req & 0xffffffffu) != IOCTL_PRIVCMD_HYPERCALL )
        {
            errno = ENOTTY;             /* the driver's answer to an ioctl it lacks */
            return -1;
        }
        if ( process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != sizeof(call) )
        {
            errno = EFAULT;
            return -1;
        }
        ret = hypercall(call);
        if ( ret < 0 )
        {
            errno = (int)-ret;
            return -1;
        }
        return (int)ret;
    }
    return CALL(ioctl, fd, req, arg);
}

/* ---------------------------------------------------------------- reboot, kexec */

REAL(long, syscall, (long, ...))

int reboot(int cmd)
{
    (void)cmd;
    say("refused to reboot this machine (reboot(2)): the tool runs on a simulated host");
    errno = EPERM;
    return -1;
}

long syscall(long nr, ...)
{
    va_list ap;
    long a[6];
    int i;

    va_start(ap, nr);
    for ( i = 0; i < 6; i++ )
        a[i] = va_arg(ap, long);
    va_end(ap);
    if ( nr == SYS_reboot || nr == SYS_kexec_load || nr == SYS_kexec_file_load )
    {
        say("refused %s on this machine: the tool runs on a simulated host",
            nr == SYS_reboot ? "reboot(2)" : nr == SYS_kexec_load ? "kexec_load(2)"
                                                                  : "kexec_file_load(2)");
        errno = EPERM;
        return -1;
    }
    if ( !get_syscall() )
    {
        errno = ENOSYS;
        return -1;
    }
    return get_syscall()(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---------------------------------------------------------------- CPUID */

static int fls64(uint64_t x)
{
    return x ? 64 - __builtin_clzll(x) : 0;
}

/* What a PV guest of the host gets for CPUID leaf/subleaf with the
 * forced-emulation prefix: Xen's leaves at 0x40000000 (xen/arch/x86/traps.c,
 * cpuid_hypervisor_leaves), nothing at the rest of the hypervisor range,
 * and the processor's own answer elsewhere. */
static void xen_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4])
{
    uint32_t idx = leaf - XEN_CPUID_FIRST_LEAF;
    int64_t v;

    r[0] = r[1] = r[2] = r[3] = 0;
    if ( leaf < XEN_CPUID_FIRST_LEAF || leaf > 0x4fffffffu )
    {
        __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
        return;
    }
    switch ( idx )
    {
    case 0:
        r[0] = XEN_CPUID_FIRST_LEAF + XEN_CPUID_MAX_NUM_LEAVES;
        r[1] = XEN_CPUID_SIGNATURE_EBX;
        r[2] = XEN_CPUID_SIGNATURE_ECX;
        r[3] = XEN_CPUID_SIGNATURE_EDX;
        break;
    case 1:
        v = hypercall2(HYPERVISOR_xen_version, XENVER_version, 0);
        r[0] = v > 0 ? (uint32_t)v : 0;
        break;
    case 2:
        r[0] = 1;                       /* hypercall-transfer pages */
        r[1] = XEN_CPUID_FIRST_LEAF;    /* their MSR */
        r[2] = XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD;
        break;
    case 5:                             /* PV parameters: machine address width */
        if ( subleaf == 0 )
        {
            v = hypercall2(HYPERVISOR_memory_op, XENMEM_maximum_ram_page, 0);
            if ( v > 0 )
                r[1] = fls64((uint64_t)v - 1) + 12;
        }
        break;
    }
}

static int forced_cpuid(const uint8_t *ip)
{
    static const uint8_t prefix[] = { 0x0f, 0x0b, 'x', 'e', 'n', 0x0f, 0xa2 };
    unsigned int i;

    for ( i = 0; i < sizeof(prefix); i++ )      /* stops at the first difference */
        if ( ip[i] != prefix[i] )
            return 0;
    return 1;
}

REAL(int, sigaction, (int, const struct sigaction *, struct sigaction *))

static void on_sigill(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    struct sigaction act = program_sigill;

    if ( si->si_code > 0 && forced_cpuid((const uint8_t *)g[REG_RIP]) )
    {
        uint32_t r[4];

        xen_cpuid((uint32_t)g[REG_RAX], (uint32_t)g[REG_RCX], r);
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 7;
        return;
    }
    if ( (act.sa_flags & SA_SIGINFO) ? act.sa_sigaction == NULL
         : (act.sa_handler == SIG_DFL || act.sa_handler == SIG_IGN) )
    {
        /* The program never took SIGILL: it does what it would have done. */
        struct sigaction dfl = { .sa_handler = SIG_DFL };

        get_sigaction()(SIGILL, &dfl, NULL);
        raise(SIGILL);
        return;
    }
    if ( act.sa_flags & SA_RESETHAND )
    {
        memset(&program_sigill, 0, sizeof(program_sigill));
        program_sigill.sa_handler = SIG_DFL;
    }
    if ( act.sa_flags & SA_SIGINFO )
        act.sa_sigaction(sig, si, ctx);
    else
        act.sa_handler(sig);
}

static int install_sigill(const struct sigaction *like)
{
    struct sigaction ours;

    memset(&ours, 0, sizeof(ours));
    ours.sa_sigaction = on_sigill;
    ours.sa_flags = SA_SIGINFO | (like ? like->sa_flags & (SA_ONSTACK | SA_RESTART | SA_NODEFER) : 0);
    if ( like )
        ours.sa_mask = like->sa_mask;
    else
        sigemptyset(&ours.sa_mask);
    return get_sigaction()(SIGILL, &ours, NULL);
}

/* SIGILL stays the bridge's; the program's own handler is kept, shown
 * back to it, and called for every SIGILL that is not Xen's prefix. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    struct sigaction prev = program_sigill;

    if ( !get_sigaction() )
    {
        errno = ENOSYS;
        return -1;
    }
    if ( sig != SIGILL || !active )
        return get_sigaction()(sig, act, old);
    if ( act )
    {
        if ( install_sigill(act) )
            return -1;
        program_sigill = *act;
    }
    if ( old )
        *old = prev;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler)
{
    struct sigaction act, old;

    memset(&act, 0, sizeof(act));
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;          /* glibc's signal(): BSD semantics */
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, sig);
    if ( sig < 1 || sigaction(sig, &act, &old) )
    {
        errno = EINVAL;
        return SIG_ERR;
    }
    return old.sa_handler;
}

sighandler_t bsd_signal(int sig, sighandler_t handler)
{
    return signal(sig, handler);
}

/* ---------------------------------------------------------------- start-up */

__attribute__((constructor))
static void bridge_init(void)
{
    const char *dir = getenv(BRIDGE_ENV);
    char path[PATH_MAX];
    struct stat st;
    int fd;

    confine();
    if ( !dir || !*dir )
        return;
    /* Resolved now, not first inside the SIGILL handler (dlsym is not
     * async-signal-safe). */
    get_lstat();
    if ( snprintf(state_dir, sizeof(state_dir), "%s", dir) >= (int)sizeof(state_dir)
         || snprintf(tree, sizeof(tree), "%s/bridge", dir) >= (int)sizeof(tree)
         || snprintf(socket_path, sizeof(socket_path), "%s/privcmd", dir) >= (int)sizeof(socket_path)
         || snprintf(path, sizeof(path), "%s/dev-xen/privcmd", tree) >= (int)sizeof(path) )
    {
        say("%s=%s is too long a path", BRIDGE_ENV, dir);
        return;
    }
    if ( get_stat() && get_stat()(path, &st) == 0 )
    {
        privcmd_dev = st.st_dev;
        privcmd_ino = st.st_ino;
    }
    fd = get_open() ? get_open()("/proc/sys/kernel/yama/ptrace_scope", O_RDONLY | O_CLOEXEC) : -1;
    if ( fd >= 0 )
    {
        char c = 0;

        yama_restricted = read(fd, &c, 1) == 1 && c == '1';
        close(fd);
    }
    if ( !get_sigaction() || get_sigaction()(SIGILL, NULL, &program_sigill) || install_sigill(NULL) )
        return;
    active = 1;
}
