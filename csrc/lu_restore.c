/*
 * xen#2's per-page records, each in one pass: the LU_PV_PAGE_TYPES items
 * of a PV domain (thousands on a big guest) are checked, applied to the
 * frame table and searched here, straight from the record's body.
 */
#include <stdint.h>
#include <string.h>

#include "lu_core.h"

struct pv_type_item {
    uint64_t mfn;
    uint32_t type;
    uint32_t flags;
};

static inline struct pv_type_item item_at(const uint8_t *items, uint64_t i)
{
    struct pv_type_item it;

    /* The body need not be aligned; the stream is little-endian, as is x86. */
    memcpy(&it, items + i * sizeof(it), sizeof(it));
    return it;
}

/* The last extent starting at or below mfn (starts sorted), or -1. */
static int64_t extent_below(const uint64_t *starts, uint64_t nr, uint64_t mfn)
{
    uint64_t lo = 0, hi = nr;

    while ( lo < hi )
    {
        uint64_t mid = lo + (hi - lo) / 2;

        if ( starts[mid] <= mfn )
            lo = mid + 1;
        else
            hi = mid;
    }
    return (int64_t)lo - 1;
}

int64_t lu_pv_types_check(const uint8_t *items, uint64_t n, const uint64_t *starts,
                          const uint64_t *counts, uint64_t nr_extents, uint32_t pinned_flag,
                          uint64_t *pinned_mfn, uint64_t *nr_pinned)
{
    uint64_t i;

    *nr_pinned = 0;
    for ( i = 0; i < n; i++ )
    {
        struct pv_type_item it = item_at(items, i);
        int64_t e = extent_below(starts, nr_extents, it.mfn);

        if ( e < 0 || it.mfn - starts[e] >= counts[e] ||
             it.type < LU_PGT_L1 || it.type > LU_PGT_SEG_DESC )
            return (int64_t)i;
        if ( it.type == LU_PGT_L4 && (it.flags & pinned_flag) )
        {
            if ( !*nr_pinned )
                *pinned_mfn = it.mfn;
            (*nr_pinned)++;
        }
    }
    return -1;
}

void lu_pv_types_apply(struct lu_frame *ft, const uint8_t *items, uint64_t n)
{
    uint64_t i;

    for ( i = 0; i < n; i++ )
    {
        struct pv_type_item it = item_at(items, i);

        ft[it.mfn].type_info = it.type << LU_PGT_TYPE_SHIFT;
    }
}

uint64_t lu_pv_types_select(const uint8_t *items, uint64_t n, uint32_t type,
                            uint64_t *out, uint64_t max_out)
{
    uint64_t i, nr = 0;

    for ( i = 0; i < n; i++ )
    {
        struct pv_type_item it = item_at(items, i);

        if ( it.type != type )
            continue;
        if ( nr < max_out )
            out[nr] = it.mfn;
        nr++;
    }
    return nr;
}
