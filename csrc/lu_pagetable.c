/*
 * Page-table walks: what a PV domain's tables imply for page types and
 * reference counts, and whether IOMMU tables map what the P2M says.
 * Used by the verifier and, after a live update, to rebuild the counts.
 */
#include <stdint.h>

#include "lu_core.h"
#include "lu_extents.h"

#define PAGE_SIZE 4096u
#define PTE_MFN(e) (((e) >> 12) & 0xffffffffffull)

static inline const uint64_t *table(const uint8_t *ram, uint64_t mfn)
{
    return (const uint64_t *)(ram + mfn * PAGE_SIZE);
}

static inline uint32_t type_of(uint32_t type_info)
{
    return type_info >> LU_PGT_TYPE_SHIFT;
}

/* Take a type reference of `type` on ex[mfn]; 0 if it conflicts. */
static int get_type(struct lu_expect *e, uint32_t type)
{
    uint32_t have = type_of(e->type_info);

    if ( (e->type_info & LU_PGT_COUNT_MASK) && have != type )
        return 0;
    e->type_info = (type << LU_PGT_TYPE_SHIFT) | (e->type_info & LU_PGT_PINNED) |
                   ((e->type_info & LU_PGT_COUNT_MASK) + 1);
    return 1;
}

struct walk {
    const uint8_t *ram;
    uint64_t nr_frames;
    const struct lu_frame *ft;
    uint16_t domid;
    const uint64_t *own_starts, *own_counts;
    uint64_t nr_own;
    uint64_t last;              /* the extent the last owned frame was in */
    uint8_t *acc;
    uint64_t stride;
    uint64_t *bad_mfn;
    uint32_t *bad_entry;
};

static inline struct lu_expect *acc_at(struct walk *w, uint64_t mfn)
{
    return (struct lu_expect *)(w->acc + mfn * w->stride);
}

/* The domain's frame: by the extents it owns when given, else by the
 * table.  A table maps runs of frames, so the extent of the last one is
 * tried before a search. */
static inline int owned(struct walk *w, uint64_t mfn)
{
    int64_t e;

    if ( !w->own_starts )
        return w->ft[mfn].owner == w->domid;
    if ( mfn - w->own_starts[w->last] < w->own_counts[w->last] )
        return 1;
    e = lu_extent_below(w->own_starts, w->nr_own, mfn);
    if ( e < 0 || mfn - w->own_starts[e] >= w->own_counts[e] )
        return 0;
    w->last = (uint64_t)e;
    return 1;
}

static int fail(struct walk *w, int err, uint64_t mfn, uint32_t entry)
{
    *w->bad_mfn = mfn;
    *w->bad_entry = entry;
    return err;
}

static int walk_table(struct walk *w, uint64_t mfn, uint32_t level)
{
    const uint64_t *t = table(w->ram, mfn);
    uint32_t i;

    for ( i = 0; i < LU_PTE_ENTRIES; i++ )
    {
        uint64_t e = t[i], child;
        struct lu_expect *ce;

        if ( !(e & LU_PTE_PRESENT) )
            continue;
        child = PTE_MFN(e);
        if ( child >= w->nr_frames )
            return fail(w, LU_WALK_OUT_OF_RANGE, mfn, i);
        if ( !owned(w, child) )
            return fail(w, LU_WALK_NOT_OWNED, mfn, i);
        ce = acc_at(w, child);
        ce->count++;
        if ( level == 1 )
        {
            /* A mapping: writable ones need the writable type. */
            if ( (e & LU_PTE_RW) && !get_type(ce, LU_PGT_WRITABLE) )
                return fail(w, LU_WALK_TYPE_CONFLICT, mfn, i);
            continue;
        }
        /* A lower table: validated (descended) when its type count first
         * becomes non-zero, as Xen's get_page_type() does. */
        if ( (ce->type_info & LU_PGT_COUNT_MASK) == 0 )
        {
            int rc;

            if ( !get_type(ce, level - 1) )
                return fail(w, LU_WALK_TYPE_CONFLICT, mfn, i);
            if ( (rc = walk_table(w, child, level - 1)) != LU_WALK_OK )
                return rc;
        }
        else if ( !get_type(ce, level - 1) )
            return fail(w, LU_WALK_TYPE_CONFLICT, mfn, i);
    }
    return LU_WALK_OK;
}

int lu_pv_walk(const uint8_t *ram, uint64_t nr_frames, const struct lu_frame *ft,
               uint16_t domid, const uint64_t *own_starts, const uint64_t *own_counts,
               uint64_t nr_own, uint64_t l4_mfn, uint8_t *acc, uint64_t stride,
               uint64_t *bad_mfn, uint32_t *bad_entry)
{
    struct walk w = { ram, nr_frames, ft, domid, own_starts, own_counts, nr_own, 0, acc, stride,
                      bad_mfn, bad_entry };

    if ( l4_mfn >= nr_frames )
        return fail(&w, LU_WALK_OUT_OF_RANGE, l4_mfn, 0);
    if ( own_starts && !nr_own )
        return fail(&w, LU_WALK_NOT_OWNED, l4_mfn, 0);     /* owns nothing: no extent to try */
    if ( !owned(&w, l4_mfn) )
        return fail(&w, LU_WALK_NOT_OWNED, l4_mfn, 0);
    return walk_table(&w, l4_mfn, 4);
}

static int64_t iommu_level(const uint8_t *ram, uint64_t nr_frames, uint64_t mfn, uint32_t level,
                           uint64_t gfn_base, const uint64_t *p2m, uint64_t nr_gfns,
                           uint64_t *bad_gfn)
{
    const uint64_t *t = table(ram, mfn);
    uint64_t span = 1ull << (9 * (level - 1));
    int64_t leaves = 0;
    uint32_t i;

    for ( i = 0; i < LU_PTE_ENTRIES; i++ )
    {
        uint64_t e = t[i], gfn = gfn_base + i * span, child;

        if ( !(e & LU_PTE_PRESENT) )
            continue;
        child = PTE_MFN(e);
        if ( level == 1 )
        {
            if ( gfn >= nr_gfns || p2m[gfn] != child )
            {
                *bad_gfn = gfn;
                return -1;
            }
            leaves++;
            continue;
        }
        if ( child >= nr_frames )
        {
            *bad_gfn = gfn;
            return -1;
        }
        {
            int64_t n = iommu_level(ram, nr_frames, child, level - 1, gfn, p2m, nr_gfns, bad_gfn);

            if ( n < 0 )
                return n;
            leaves += n;
        }
    }
    return leaves;
}

int64_t lu_iommu_check(const uint8_t *ram, uint64_t nr_frames, uint64_t root_mfn,
                       const uint64_t *p2m, uint64_t nr_gfns, uint64_t *bad_gfn)
{
    if ( root_mfn >= nr_frames )
    {
        *bad_gfn = 0;
        return -1;
    }
    return iommu_level(ram, nr_frames, root_mfn, 4, 0, p2m, nr_gfns, bad_gfn);
}

uint64_t lu_frames_compare(const struct lu_frame *ft, const struct lu_expect *ex,
                           uint64_t first, uint64_t end, uint64_t *out, uint64_t max_out)
{
    uint64_t mfn, n = 0;

    for ( mfn = first; mfn < end; mfn++ )
        if ( ft[mfn].type_info != ex[mfn].type_info || ft[mfn].count_info != ex[mfn].count )
        {
            if ( n < max_out )
                out[n] = mfn;
            n++;
        }
    return n;
}

void lu_pt_fill(uint64_t *entries, uint64_t first_mfn, uint64_t count, uint64_t flags)
{
    uint64_t i;

    for ( i = 0; i < count; i++ )
        entries[i] = ((first_mfn + i) << 12) | flags;
}

void lu_fill_run(uint64_t *out, uint64_t first, uint64_t count)
{
    uint64_t i;

    for ( i = 0; i < count; i++ )
        out[i] = first + i;
}

void lu_expect_init(const struct lu_frame *ft, struct lu_expect *ex, uint64_t nr_frames)
{
    uint64_t mfn;

    for ( mfn = 0; mfn < nr_frames; mfn++ )
    {
        int owned = ft[mfn].use == LU_USE_GUEST || ft[mfn].use == LU_USE_SHARED;

        ex[mfn].type_info = 0;
        ex[mfn].count = owned ? (LU_PGC_ALLOCATED | 1u) : 0;
    }
}

void lu_fill_value(uint64_t *out, uint64_t value, uint64_t count)
{
    uint64_t i;

    for ( i = 0; i < count; i++ )
        out[i] = value;
}

uint64_t lu_check_run(const uint64_t *a, uint64_t first, uint64_t count)
{
    uint64_t i;

    for ( i = 0; i < count; i++ )
        if ( a[i] != first + i )
            break;
    return i;
}
