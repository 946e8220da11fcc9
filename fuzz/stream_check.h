/*
 * Shared by stream_fuzz.c (libFuzzer) and stream_replay.c (the ASan driver
 * tests/test_stream_asan.py runs): the record types an image built today
 * can restore (xen_public.lustream.ALL_RECORD_TYPES; the test checks the two
 * lists agree), and what must hold of any lu_stream_validate() result.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lu_core.h"

static const uint32_t stream_known_types[] = {
    0x00000000, 0x00000002, 0x0000000a,
    0x40000000, 0x40000001, 0x40000002, 0x40000003, 0x40000004, 0x40000005,
    0x40000006, 0x40000007, 0x40000008, 0x40000009, 0x4000000a, 0x4000000b,
    0x4000000c, 0x4000000d, 0x4000000e, 0x4000000f, 0x40000010,
    0x40000011, 0x40000012,
};
#define STREAM_NR_KNOWN ((uint32_t)(sizeof(stream_known_types) / sizeof(stream_known_types[0])))

static void stream_violation(const char *what, int64_t n, uint64_t len, uint64_t off)
{
    fprintf(stderr, "INVARIANT: %s (result %lld, length %llu, bad offset %llu)\n", what,
            (long long)n, (unsigned long long)len, (unsigned long long)off);
    abort();
}

/*
 * A result is an error code, with the offset at fault inside the input, or
 * a record count: at least one (the system section's END), at most one per
 * 8 bytes after the image header.  An input a hypervisor that knows every
 * type accepts, one that knows none refuses only for an unknown record
 * (LU_VERSION is mandatory), or accepts with the same count.
 */
static void stream_check(uint64_t len, int64_t n_all, uint64_t off_all, int64_t n_none,
                         uint64_t off_none)
{
    if ( n_all < LU_STREAM_RESERVED )
        stream_violation("unknown error code", n_all, len, off_all);
    if ( n_all < 0 && off_all > len )
        stream_violation("bad offset past the end", n_all, len, off_all);
    if ( n_all >= 0 && (n_all < 1 || (uint64_t)n_all > len / 8) )
        stream_violation("record count out of range", n_all, len, off_all);
    if ( n_none < LU_STREAM_RESERVED || (n_none < 0 && off_none > len) )
        stream_violation("bad result without known types", n_none, len, off_none);
    if ( n_all >= 0 && n_none != n_all && n_none != LU_STREAM_UNKNOWN_RECORD )
        stream_violation("known types change more than unknown records", n_none, len, off_none);
}
