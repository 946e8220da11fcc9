/* A digest of large buffers at memory speed: has any byte changed? */
#include <stdint.h>
#include <string.h>

#include "lu_core.h"

static inline uint64_t lane(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

uint64_t lu_digest64(const uint8_t *data, uint64_t len)
{
    uint64_t h0 = 0x6a09e667f3bcc909ull ^ len, h1 = 0xbb67ae8584caa73bull;
    uint64_t h2 = 0x3c6ef372fe94f82bull, h3 = 0xa54ff53a5f1d36f1ull;
    uint64_t i, w0, w1, w2, w3;

    /* Four chains in scalar registers, so the multiplies overlap instead
     * of waiting on each other. */
    for ( i = 0; i + 32 <= len; i += 32 )
    {
        memcpy(&w0, data + i, 8);
        memcpy(&w1, data + i + 8, 8);
        memcpy(&w2, data + i + 16, 8);
        memcpy(&w3, data + i + 24, 8);
        h0 = lane(h0, w0);
        h1 = lane(h1, w1);
        h2 = lane(h2, w2);
        h3 = lane(h3, w3);
    }
    for ( ; i + 8 <= len; i += 8 )
    {
        memcpy(&w0, data + i, 8);
        h0 = lane(h0, w0);
    }
    for ( ; i < len; i++ )
        h1 = lane(h1, data[i]);
    h0 = lane(lane(lane(h0 * 0xff51afd7ed558ccdull, h1) * 0xff51afd7ed558ccdull, h2)
              * 0xff51afd7ed558ccdull, h3);
    h0 ^= h0 >> 33;
    h0 *= 0xff51afd7ed558ccdull;
    return h0 ^ (h0 >> 33);
}
