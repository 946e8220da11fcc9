/* Live-update quiesce: vCPUs to restartable boundaries without waiting for
 * a pCPU to come round to each of them. */
#include <stdint.h>

#include "lu_core.h"

uint32_t lu_quiesce_sweep(struct lu_vcpu **vcpus, uint32_t n, uint32_t *first)
{
    uint32_t i, waiting = 0;

    *first = n;
    for ( i = 0; i < n; i++ )
    {
        struct lu_vcpu *v = vcpus[i];
        uint32_t expected = 0, paused = 0;

        /* Claimed as a pCPU claims it, so none can start it meanwhile:
         * the run state read below stays true until it is released. */
        if ( __atomic_compare_exchange_n(&v->on_cpu, &expected, 1, 0,
                                         __ATOMIC_ACQUIRE, __ATOMIC_RELAXED) )
        {
            if ( __atomic_load_n(&v->quiesce_req, __ATOMIC_ACQUIRE) &&
                 v->runstate != LU_RUN_BLOCKED_IO )
                __atomic_store_n(&v->pause_req, 1, __ATOMIC_RELEASE);
            paused = __atomic_load_n(&v->pause_req, __ATOMIC_ACQUIRE);
            __atomic_store_n(&v->on_cpu, 0, __ATOMIC_RELEASE);
        }
        if ( !paused )
        {
            if ( !waiting )
                *first = i;
            waiting++;
        }
    }
    return waiting;
}
