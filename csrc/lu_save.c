/* Live-update save: record bodies built straight from the frame table. */
#include <stdint.h>
#include <string.h>

#include "lu_core.h"

#define PV_PAGE_TYPE_ITEM 16u

static inline void put_le64(uint8_t *p, uint64_t v)
{
    int i;

    for ( i = 0; i < 8; i++ )
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    int i;

    for ( i = 0; i < 4; i++ )
        p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t lu_save_pv_page_types(const struct lu_frame *ft, const uint64_t *starts,
                               const uint64_t *counts, uint64_t nr_extents, uint16_t owner,
                               uint32_t pinned_flag, uint8_t *out, uint64_t max_out)
{
    uint64_t e, n = 0;

    /* One pass over each extent: the frame table is read once. */
    for ( e = 0; e < nr_extents; e++ )
    {
        const struct lu_frame *f = ft + starts[e], *stop = f + counts[e];

        for ( ; f < stop; f++ )
        {
            uint32_t ti = f->type_info, t = ti >> LU_PGT_TYPE_SHIFT;
            uint8_t *item;

            if ( f->owner != owner || t < LU_PGT_L1 || t > LU_PGT_SEG_DESC )
                continue;
            if ( n < max_out )
            {
                item = out + n * PV_PAGE_TYPE_ITEM;
                put_le64(item, (uint64_t)(f - ft));
                put_le32(item + 8, t);
                put_le32(item + 12, (ti & LU_PGT_PINNED) ? pinned_flag : 0);
            }
            n++;
        }
    }
    return n;
}
