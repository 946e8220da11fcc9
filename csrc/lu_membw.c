/*
 * This machine's memory bandwidth, as the benchmark measures it beside the
 * C core's scans and rebuilds (bench/core.py): a store over a buffer, and a
 * streaming read of it, each as fast as plain C goes.  Nothing on the
 * live-update path calls these.
 */
#include <stdint.h>
#include <string.h>

#include "lu_core.h"

void lu_membw_fill(uint8_t *buf, uint64_t len, uint8_t byte)
{
    memset(buf, byte, len);
}

uint64_t lu_membw_read(const uint8_t *buf, uint64_t len)
{
    const uint64_t *w = (const uint64_t *)buf;
    uint64_t a = 0, b = 0, c = 0, d = 0, i, n = len / 32;

    /* Four lanes, so the loads are not one dependency chain. */
    for ( i = 0; i < n; i++ )
    {
        a += w[4 * i];
        b ^= w[4 * i + 1];
        c += w[4 * i + 2];
        d ^= w[4 * i + 3];
    }
    return a ^ b ^ c ^ d;
}
