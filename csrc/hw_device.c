/*
 * A passthrough device, as its own process runs it: DMA into its guest's
 * memory through the IOMMU, on its own clock, whatever the hypervisor is
 * doing (docs/iommu.md).  No lock but the IOMMU model's: the slot's
 * counters have one writer, this device.
 */
#include <stdint.h>
#include <time.h>

#include "hw_iommu.h"

_Static_assert(sizeof(((struct lu_device_regs *)0)->log) == LU_DMA_LOG * sizeof(uint64_t), "DMA log");
_Static_assert(sizeof(((struct lu_chipset *)0)->dev) == LU_MAX_DEVICES * sizeof(struct lu_device_regs),
               "device slots");

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t lu_dev_run(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint32_t slot)
{
    struct lu_device_regs *d = &c->dev[slot];
    uint64_t done = 0;

    while ( __atomic_load_n(&d->state, __ATOMIC_ACQUIRE) == LU_DEV_RUNNING )
    {
        uint64_t maddr, seq = d->seq + 1, t = now_ns();
        struct timespec pause = { 0, (long)(d->period_ns ? d->period_ns : 100000) };

        if ( lu_hw_translate(c, ram, nr_frames, d->sid, d->dma_iova, 1, &maddr) == 0 &&
             (maddr & 15) == 0 )
        {
            uint64_t *dst = (uint64_t *)(ram + maddr);

            __atomic_store_n(&dst[1], t, __ATOMIC_RELAXED);
            __atomic_store_n(&dst[0], seq, __ATOMIC_RELEASE);
            __atomic_store_n(&d->seq, seq, __ATOMIC_RELEASE);
            d->log[d->log_next % LU_DMA_LOG] = t;
            __atomic_store_n(&d->log_next, d->log_next + 1, __ATOMIC_RELEASE);
            __atomic_store_n(&d->dma_ops, d->dma_ops + 1, __ATOMIC_RELEASE);
            done++;
            /* New work for the driver: one MSI, unless one is still untaken. */
            if ( !__atomic_load_n(&d->irq_outstanding, __ATOMIC_ACQUIRE) )
            {
                d->irq_sent_seq = seq;
                __atomic_store_n(&d->irq_outstanding, 1, __ATOMIC_RELEASE);
                if ( lu_hw_msi(c, ram, nr_frames, d->sid, d->msi_index) == 0 )
                    __atomic_store_n(&d->msis_sent, d->msis_sent + 1, __ATOMIC_RELEASE);
            }
        }
        else
            __atomic_store_n(&d->dma_faults, d->dma_faults + 1, __ATOMIC_RELEASE);
        nanosleep(&pause, NULL);
    }
    return done;
}

uint64_t lu_dev_window(const struct lu_device_regs *d, uint64_t from_ns, uint64_t to_ns,
                       uint64_t *max_gap_ns)
{
    uint64_t next = __atomic_load_n(&d->log_next, __ATOMIC_ACQUIRE);
    uint64_t first = next > LU_DMA_LOG ? next - LU_DMA_LOG : 0, i, n = 0, prev = from_ns;

    *max_gap_ns = 0;
    for ( i = first; i < next; i++ )
    {
        uint64_t t = d->log[i % LU_DMA_LOG];

        if ( t < from_ns || t > to_ns )
            continue;
        if ( t - prev > *max_gap_ns )
            *max_gap_ns = t - prev;
        prev = t;
        n++;
    }
    if ( to_ns - prev > *max_gap_ns )
        *max_gap_ns = to_ns - prev;
    return n;
}
