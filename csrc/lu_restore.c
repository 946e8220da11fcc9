/*
 * xen#2's per-page records, each in one pass: the LU_PV_PAGE_TYPES items
 * of a PV domain (thousands on a big guest) are checked, applied to the
 * frame table and searched here, straight from the record's body.
 */
#include <stdint.h>
#include <string.h>

#include "lu_core.h"
#include "lu_extents.h"

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

int64_t lu_pv_types_check(const uint8_t *items, uint64_t n, const uint64_t *starts,
                          const uint64_t *counts, uint64_t nr_extents, uint32_t pinned_flag,
                          uint64_t *pinned_mfn, uint64_t *nr_pinned)
{
    uint64_t i;

    *nr_pinned = 0;
    for ( i = 0; i < n; i++ )
    {
        struct pv_type_item it = item_at(items, i);
        if ( !lu_in_extents(starts, counts, nr_extents, it.mfn) ||
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
