/*
 * Sorted extents of frames, searched by the C core (not part of the cffi
 * interface: included by the .c files that need it).
 */
#ifndef LU_EXTENTS_H
#define LU_EXTENTS_H

#include <stdint.h>

/* The last extent starting at or below mfn (starts sorted), or -1. */
static inline int64_t lu_extent_below(const uint64_t *starts, uint64_t nr, uint64_t mfn)
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

/* Whether mfn lies in one of the extents (starts sorted, not overlapping). */
static inline int lu_in_extents(const uint64_t *starts, const uint64_t *counts, uint64_t nr,
                                uint64_t mfn)
{
    int64_t e = lu_extent_below(starts, nr, mfn);

    return e >= 0 && mfn - starts[e] < counts[e];
}

#endif
