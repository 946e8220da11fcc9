/*
 * A passthrough NIC, as its own process runs it: rounds of DMA into and out
 * of its guest's memory through the IOMMU, on its own clock, whatever the
 * hypervisor is doing (docs/iommu.md, the ring format in hw_nic.h).  No
 * lock but the IOMMU model's: the slot's counters have one writer, this
 * device, and the guest's ring indices one writer each.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "hw_iommu.h"
#include "hw_nic.h"

_Static_assert(sizeof(((struct lu_device_regs *)0)->log) == LU_DMA_LOG * sizeof(uint64_t), "DMA log");
_Static_assert(sizeof(((struct lu_device_regs *)0)->drop_log) == LU_DMA_LOG * sizeof(uint64_t), "drop log");
_Static_assert(sizeof(((struct lu_chipset *)0)->dev) == LU_MAX_DEVICES * sizeof(struct lu_device_regs),
               "device slots");

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The guest bytes at iova as the device reaches them, or NULL: the IOMMU
 * refused (and logged it). */
static void *dma(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint16_t sid, uint64_t iova,
                 int write)
{
    uint64_t maddr;

    return lu_hw_translate(c, ram, nr_frames, sid, iova, write, &maddr) ? NULL : ram + maddr;
}

/* The descriptor at index of the ring at offset in the NIC's page 0. */
static struct lu_nic_desc *ring_desc(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames,
                                     struct lu_device_regs *d, uint32_t offset, uint32_t index)
{
    return dma(c, ram, nr_frames, d->sid,
               d->dma_iova + offset + (index % LU_NIC_RING) * sizeof(struct lu_nic_desc), 1);
}

/* A buffer the driver gave: packet-aligned, so that it lies in one page. */
static void *buffer(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, struct lu_device_regs *d,
                    const struct lu_nic_desc *desc, int write)
{
    uint64_t iova = __atomic_load_n(&desc->addr, __ATOMIC_ACQUIRE);

    return iova % LU_NIC_PACKET ? NULL : dma(c, ram, nr_frames, d->sid, iova, write);
}

static void log_drop(struct lu_device_regs *d, uint64_t t)
{
    d->drop_log[d->drop_next % LU_DMA_LOG] = t;
    __atomic_store_n(&d->drop_next, d->drop_next + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&d->rx_dropped, d->rx_dropped + 1, __ATOMIC_RELEASE);
}

/* The wire's next packet: into the next posted buffer, or dropped (no
 * buffer posted: the ring is full) and counted.  Held for the next round
 * if the DMA faults. */
static int receive(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, struct lu_device_regs *d,
                   struct lu_nic_indices *ix, uint64_t t)
{
    uint32_t filled = ix->rx_filled, posted = __atomic_load_n(&ix->rx_posted, __ATOMIC_ACQUIRE);
    struct lu_nic_packet pkt;
    struct lu_nic_desc *desc;
    void *buf;

    if ( posted == filled || (uint32_t)(posted - filled) > LU_NIC_RING )
    {
        log_drop(d, t);
        return 0;
    }
    desc = ring_desc(c, ram, nr_frames, d, LU_NIC_RX_RING, filled);
    if ( !desc || !(buf = buffer(c, ram, nr_frames, d, desc, 1)) )
        return -1;
    lu_nic_make(&pkt, d->rx_delivered + d->rx_dropped + 1, d->rx_dropped, t);
    memcpy(buf, &pkt, sizeof(pkt));
    desc->len = sizeof(pkt);
    __atomic_store_n(&desc->flags, LU_NIC_DONE, __ATOMIC_RELEASE);
    __atomic_store_n(&ix->rx_filled, filled + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&d->rx_delivered, d->rx_delivered + 1, __ATOMIC_RELEASE);
    return 0;
}

/* Every packet the driver queued goes out: its checksum and its number
 * (one more than the last sent) checked, as the far end would. */
static int transmit(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, struct lu_device_regs *d,
                    struct lu_nic_indices *ix)
{
    uint32_t sent = ix->tx_sent, queued = __atomic_load_n(&ix->tx_queued, __ATOMIC_ACQUIRE);
    struct lu_nic_packet pkt;

    if ( (uint32_t)(queued - sent) > LU_NIC_RING )
        return 0;                       /* indices the driver never wrote: nothing queued */
    for ( ; sent != queued; sent++ )
    {
        struct lu_nic_desc *desc = ring_desc(c, ram, nr_frames, d, LU_NIC_TX_RING, sent);
        const void *buf = desc ? buffer(c, ram, nr_frames, d, desc, 0) : NULL;

        if ( !buf )
            return -1;
        memcpy(&pkt, buf, sizeof(pkt));
        if ( lu_nic_csum(&pkt) != pkt.csum )
            __atomic_store_n(&d->tx_bad, d->tx_bad + 1, __ATOMIC_RELEASE);
        else if ( (uint32_t)pkt.seq != (uint32_t)(d->tx_sent + 1) )    /* the driver numbers in 32 bits */
            __atomic_store_n(&d->tx_out_of_order, d->tx_out_of_order + 1, __ATOMIC_RELEASE);
        __atomic_store_n(&d->tx_sent, d->tx_sent + 1, __ATOMIC_RELEASE);
        __atomic_store_n(&desc->flags, LU_NIC_DONE, __ATOMIC_RELEASE);
        __atomic_store_n(&ix->tx_sent, sent + 1, __ATOMIC_RELEASE);
    }
    return 0;
}

int lu_dev_round(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint32_t slot, uint64_t t)
{
    struct lu_device_regs *d = &c->dev[slot];
    struct lu_nic_indices *ix = dma(c, ram, nr_frames, d->sid, d->dma_iova + LU_NIC_INDICES, 1);
    uint64_t *status, seq = d->seq + 1;

    if ( !ix || receive(c, ram, nr_frames, d, ix, t) || transmit(c, ram, nr_frames, d, ix) ||
         !(status = dma(c, ram, nr_frames, d->sid, d->dma_iova, 1)) )
    {
        __atomic_store_n(&d->dma_faults, d->dma_faults + 1, __ATOMIC_RELEASE);
        return -1;
    }
    __atomic_store_n(&status[1], t, __ATOMIC_RELAXED);
    __atomic_store_n(&status[0], seq, __ATOMIC_RELEASE);
    __atomic_store_n(&d->seq, seq, __ATOMIC_RELEASE);
    d->log[d->log_next % LU_DMA_LOG] = t;
    __atomic_store_n(&d->log_next, d->log_next + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&d->dma_ops, d->dma_ops + 1, __ATOMIC_RELEASE);
    /* New work for the driver: one MSI, unless one is still untaken. */
    if ( !__atomic_load_n(&d->irq_outstanding, __ATOMIC_ACQUIRE) )
    {
        d->irq_sent_seq = seq;
        __atomic_store_n(&d->irq_outstanding, 1, __ATOMIC_RELEASE);
        if ( lu_hw_msi(c, ram, nr_frames, d->sid, d->msi_index) == 0 )
            __atomic_store_n(&d->msis_sent, d->msis_sent + 1, __ATOMIC_RELEASE);
    }
    return 0;
}

uint64_t lu_dev_run(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint32_t slot)
{
    struct lu_device_regs *d = &c->dev[slot];
    uint64_t done = 0;

    while ( __atomic_load_n(&d->state, __ATOMIC_ACQUIRE) == LU_DEV_RUNNING )
    {
        struct timespec pause = { 0, (long)(d->period_ns ? d->period_ns : 100000) };

        if ( lu_dev_round(c, ram, nr_frames, slot, now_ns()) == 0 )
            done++;
        nanosleep(&pause, NULL);
    }
    return done;
}

/* Of the last LU_DMA_LOG times logged before next: how many fall in
 * [from_ns, to_ns], and the longest time without one inside it. */
static uint64_t log_window(const uint64_t *log, uint64_t next, uint64_t from_ns, uint64_t to_ns,
                           uint64_t *max_gap_ns)
{
    uint64_t first = next > LU_DMA_LOG ? next - LU_DMA_LOG : 0, i, n = 0, prev = from_ns;

    *max_gap_ns = 0;
    for ( i = first; i < next; i++ )
    {
        uint64_t t = log[i % LU_DMA_LOG];

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

uint64_t lu_dev_window(const struct lu_device_regs *d, uint64_t from_ns, uint64_t to_ns,
                       uint64_t *max_gap_ns)
{
    return log_window(d->log, __atomic_load_n(&d->log_next, __ATOMIC_ACQUIRE), from_ns, to_ns, max_gap_ns);
}

uint64_t lu_dev_drops_in(const struct lu_device_regs *d, uint64_t from_ns, uint64_t to_ns)
{
    uint64_t gap;

    return log_window(d->drop_log, __atomic_load_n(&d->drop_next, __ATOMIC_ACQUIRE), from_ns, to_ns, &gap);
}
