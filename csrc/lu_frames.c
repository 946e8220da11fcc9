/* Frame-table scanning and marking. */
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "lu_core.h"

/*
 * Marking goes a 4 KiB page of the table at a time: a page whose entries
 * already hold the value is left alone, not rewritten.  A restore writes each entry's
 * value from the stream whatever the table held (nothing of it is
 * trusted), but most of a big host's table already holds what xen#1 had,
 * and a store that changes nothing still dirties its page of the RAM file
 * (its writeback, its write fault in a new process).  The table ends the
 * same either way.
 */
_Static_assert(sizeof(struct lu_frame) == 16, "one 128-bit store per entry");
_Static_assert(4096 % sizeof(struct lu_frame) == 0, "no entry straddles a page of the table");

static int all_equal(const struct lu_frame *p, const struct lu_frame *stop, const struct lu_frame *proto)
{
    for ( ; p < stop; p++ )
        if ( memcmp(p, proto, sizeof(*p)) )
            return 0;
    return 1;
}

/* A whole aligned page goes out with non-temporal stores: a first boot
 * (or a table that changed) writes most of a big host's table once, and
 * reading each line into the cache before overwriting it would double the
 * memory traffic. */
static void store(struct lu_frame *p, struct lu_frame *end, const struct lu_frame *proto)
{
#ifdef __SSE2__
    if ( (char *)end - (char *)p == 4096 && !((uintptr_t)p & 15) )
    {
        __m128i v;

        memcpy(&v, proto, sizeof(v));
        for ( ; p < end; p++ )
            _mm_stream_si128((__m128i *)p, v);
        return;
    }
#endif
    for ( ; p < end; p++ )
        *p = *proto;
}

void lu_frames_set(struct lu_frame *ft, uint64_t first, uint64_t count,
                   uint16_t owner, uint8_t use,
                   uint32_t type_info, uint32_t count_info)
{
    struct lu_frame proto = {
        .owner = owner, .use = use, .flags = 0,
        .type_info = type_info, .count_info = count_info, .reserved = 0,
    };
    struct lu_frame *p = ft + first, *stop = ft + first + count;

    if ( (uintptr_t)ft % sizeof(*ft) )
    {
        /* Entries that straddle pages: no page at a time, just the stores. */
        for ( ; p < stop; p++ )
            *p = proto;
        return;
    }
    while ( p < stop )
    {
        /* To the end of this page of the table. */
        struct lu_frame *page_end = (struct lu_frame *)(((uintptr_t)p | 4095) + 1);
        struct lu_frame *end = page_end < stop ? page_end : stop;

        /* The compare's first load of a page waits on memory: ask for the
         * pages ahead meanwhile. */
        __builtin_prefetch((char *)page_end + 2 * 4096);
        if ( !all_equal(p, end, &proto) )
            store(p, end, &proto);
        p = end;
    }
#ifdef __SSE2__
    _mm_sfence();       /* the streamed stores ordered before anyone reads the table */
#endif
}

static inline int frame_matches(const struct lu_frame *f, uint16_t owner,
                                uint8_t use)
{
    return f->owner == owner && f->use == use;
}

uint64_t lu_frames_scan(const struct lu_frame *ft, uint64_t first, uint64_t end,
                        uint16_t owner, uint8_t use,
                        uint64_t *starts, uint64_t *lengths, uint64_t max_out)
{
    uint64_t nr = 0, mfn = first;

    while ( mfn < end )
    {
        uint64_t run;

        while ( mfn < end && !frame_matches(&ft[mfn], owner, use) )
            mfn++;
        if ( mfn == end )
            break;
        run = mfn;
        while ( mfn < end && frame_matches(&ft[mfn], owner, use) )
            mfn++;
        if ( nr < max_out )
        {
            starts[nr] = run;
            lengths[nr] = mfn - run;
        }
        nr++;
    }
    return nr;
}

uint64_t lu_frames_count(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint16_t owner, uint8_t use)
{
    uint64_t nr = 0, mfn;

    for ( mfn = first; mfn < end; mfn++ )
        nr += frame_matches(&ft[mfn], owner, use);
    return nr;
}

uint64_t lu_frames_find_mismatch(const struct lu_frame *ft, uint64_t first,
                                 uint64_t end, uint16_t owner, uint8_t use)
{
    uint64_t mfn;

    for ( mfn = first; mfn < end; mfn++ )
        if ( !frame_matches(&ft[mfn], owner, use) )
            break;
    return mfn;
}

void lu_frames_histogram(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint64_t *counts)
{
    uint64_t mfn;

    for ( mfn = first; mfn < end; mfn++ )
        if ( ft[mfn].use < LU_USE_MAX )
            counts[ft[mfn].use]++;
}

uint64_t lu_frames_typed(const struct lu_frame *ft, uint64_t first, uint64_t end,
                         uint16_t owner, uint64_t *mfns, uint32_t *type_info, uint64_t max_out)
{
    uint64_t mfn, n = 0;

    for ( mfn = first; mfn < end; mfn++ )
    {
        uint32_t t = ft[mfn].type_info >> LU_PGT_TYPE_SHIFT;

        if ( ft[mfn].owner != owner || t < LU_PGT_L1 || t > LU_PGT_SEG_DESC )
            continue;
        if ( n < max_out )
        {
            mfns[n] = mfn;
            type_info[n] = ft[mfn].type_info;
        }
        n++;
    }
    return n;
}

uint64_t lu_frames_use_runs(const struct lu_frame *ft, uint64_t first, uint64_t end,
                            uint64_t *starts, uint64_t *lengths, uint8_t *uses, uint64_t max_out)
{
    uint64_t n = 0, mfn = first;

    while ( mfn < end )
    {
        uint64_t run = mfn;
        uint8_t use = ft[mfn].use;

        while ( mfn < end && ft[mfn].use == use )
            mfn++;
        if ( n < max_out )
        {
            starts[n] = run;
            lengths[n] = mfn - run;
            uses[n] = use;
        }
        n++;
    }
    return n;
}
