/* What a PV guest's tool sees of Xen's CPUID leaves, asked the way
 * kexec-tools asks (the forced-emulation prefix), and what becomes of an
 * ordinary SIGILL: with "own", through a handler of its own; without, the
 * default action (killed by SIGILL). */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static sigjmp_buf back;
static int caught;

static void on_sigill(int sig)
{
    (void)sig;
    caught++;
    siglongjmp(back, 1);
}

static void xen_cpuid(uint32_t leaf, uint32_t r[4])
{
    asm volatile ("ud2a ; .ascii \"xen\" ; cpuid"
                  : "=a" (r[0]), "=b" (r[1]), "=c" (r[2]), "=d" (r[3])
                  : "0" (leaf), "2" (0));
}

int main(int argc, char **argv)
{
    int own = argc > 1 && strcmp(argv[1], "own") == 0;
    uint32_t leaf, r[4];

    if ( own )
    {
        struct sigaction act;

        memset(&act, 0, sizeof(act));
        act.sa_handler = on_sigill;
        sigaction(SIGILL, &act, NULL);
    }
    for ( leaf = 0x40000000; leaf <= 0x40000002; leaf++ )
    {
        xen_cpuid(leaf, r);
        printf("%08x: %08x %08x %08x %08x\n", leaf, r[0], r[1], r[2], r[3]);
    }
    fflush(stdout);
    if ( sigsetjmp(back, 1) == 0 )
        asm volatile ("ud2");
    printf("own handler ran %d time(s)\n", caught);
    return 0;
}
