/* The live-update stream: packing into pages, the contiguous view, framing. */
#include <stdint.h>
#include <string.h>

#include "lu_core.h"

#define PAGE_SIZE 4096u
#define IMAGE_HEADER 24u
#define DOMAIN_HEADER 16u
#define RECORD_HEADER 8u
#define RECORD_MAX (128u << 20)
#define REC_OPTIONAL 0x80000000u
#define REC_END 0u
#define REC_LU_VERSION 0x40000000u

uint64_t lu_hash64(const uint8_t *data, uint64_t len)
{
    uint64_t h = 0x6a09e667f3bcc909ull ^ len, i, w;

    for ( i = 0; i + 8 <= len; i += 8 )
    {
        memcpy(&w, data + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for ( ; i < len; i++ )
        h = (h ^ data[i]) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

void lu_stream_scatter(uint8_t *ram, const uint64_t *mfns, uint64_t nr,
                       const uint8_t *data, uint64_t len)
{
    uint64_t i;

    for ( i = 0; i < nr; i++ )
    {
        uint64_t off = i * PAGE_SIZE, n = len > off ? len - off : 0;
        uint8_t *page = ram + mfns[i] * PAGE_SIZE;

        if ( n > PAGE_SIZE )
            n = PAGE_SIZE;
        memcpy(page, data + off, n);
        memset(page + n, 0, PAGE_SIZE - n);
    }
}

void lu_stream_gather(const uint8_t *ram, const uint64_t *mfns, uint64_t nr, uint8_t *out)
{
    uint64_t i;

    for ( i = 0; i < nr; i++ )
        memcpy(out + i * PAGE_SIZE, ram + mfns[i] * PAGE_SIZE, PAGE_SIZE);
}

static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

static int known_type(uint32_t type, const uint32_t *known, uint32_t nr_known)
{
    uint32_t i;

    for ( i = 0; i < nr_known; i++ )
        if ( known[i] == (type & ~REC_OPTIONAL) )
            return 1;
    return 0;
}

/* Records from *off to the section's END; returns records seen or an error. */
static int64_t section(const uint8_t *buf, uint64_t len, uint64_t *off, int first_lu_version,
                       const uint32_t *known, uint32_t nr_known, uint64_t *bad_offset,
                       uint32_t *bad_type)
{
    int64_t n = 0;

    for ( ;; )
    {
        uint32_t type, body;
        uint64_t padded, i;

        *bad_offset = *off;
        *bad_type = 0;
        if ( len - *off < RECORD_HEADER )
            return LU_STREAM_NO_END;
        type = le32(buf + *off);
        body = le32(buf + *off + 4);
        *bad_type = type;
        if ( first_lu_version && n == 0 && type != REC_LU_VERSION )
            return LU_STREAM_LU_ONLY_HEADER;
        if ( body > RECORD_MAX )
            return LU_STREAM_TOO_LARGE;
        padded = ((uint64_t)body + 7) & ~7ull;
        if ( padded > len - *off - RECORD_HEADER )
            return LU_STREAM_TRUNCATED;
        if ( type != REC_END && !(type & REC_OPTIONAL) && !known_type(type, known, nr_known) )
            return LU_STREAM_UNKNOWN_RECORD;
        for ( i = body; i < padded; i++ )
            if ( buf[*off + RECORD_HEADER + i] )
                return LU_STREAM_BAD_PADDING;
        *off += RECORD_HEADER + padded;
        n++;
        if ( type == REC_END )
            return n;
    }
}

int64_t lu_stream_validate(const uint8_t *buf, uint64_t len, const uint32_t *known,
                           uint32_t nr_known, uint64_t *bad_offset, uint32_t *bad_type)
{
    static const uint8_t marker[8] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    uint64_t off = IMAGE_HEADER;
    int64_t total = 0, n;

    *bad_offset = 0;
    *bad_type = 0;
    if ( len < IMAGE_HEADER )
        return LU_STREAM_TRUNCATED;
    /* marker, "XENF", version 3, options 0 (little-endian records). */
    if ( memcmp(buf, marker, 8) || be32(buf + 8) != 0x58454e46 || be32(buf + 12) != 3 ||
         buf[16] || buf[17] )
        return LU_STREAM_BAD_HEADER;
    /* reserved[6]: zero, so that a later format can use them. */
    for ( n = 18; n < IMAGE_HEADER; n++ )
        if ( buf[n] )
        {
            *bad_offset = 18;
            return LU_STREAM_RESERVED;
        }
    n = section(buf, len, &off, 1, known, nr_known, bad_offset, bad_type);
    if ( n < 0 )
        return n;
    total += n;
    while ( off < len )
    {
        uint32_t type;

        *bad_offset = off;
        *bad_type = 0;
        if ( len - off < DOMAIN_HEADER )
            return LU_STREAM_TRUNCATED;
        type = le32(buf + off);
        /* 1: x86 PV, 2: x86 HVM; page_shift 12. */
        if ( (type != 1 && type != 2) || buf[off + 4] != 12 || buf[off + 5] )
            return LU_STREAM_BAD_DOMAIN;
        if ( buf[off + 6] || buf[off + 7] )        /* u16 reserved */
        {
            *bad_offset = off + 6;
            return LU_STREAM_RESERVED;
        }
        off += DOMAIN_HEADER;
        n = section(buf, len, &off, 0, known, nr_known, bad_offset, bad_type);
        if ( n < 0 )
            return n;
        total += n;
    }
    return total;
}
