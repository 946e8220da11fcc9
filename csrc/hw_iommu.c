/*
 * The IOMMU model: what the chipset does with the registers software
 * writes and the DMA devices issue (docs/iommu.md).  Runs in whichever
 * process drives it (a device translating its DMA, the hypervisor waiting
 * on its invalidation queue), under the chipset's spinlock, as hardware
 * that answers everyone in turn.
 */
#include <stdint.h>
#include <string.h>

#include "hw_iommu.h"

#define PAGE_SHIFT 12
#define PAGE_SIZE 4096ull
#define ADDR_MASK 0x000FFFFFFFFFF000ull     /* bits 12-51 */

_Static_assert(sizeof(((struct lu_vtd_regs *)0)->faults) ==
               LU_FAULT_RECORDS * sizeof(struct lu_fault_record), "fault records");
_Static_assert(sizeof(((struct lu_chipset *)0)->iotlb) ==
               LU_IOTLB_ENTRIES * sizeof(struct lu_iotlb_entry), "IOTLB entries");
_Static_assert(sizeof(struct lu_fault_record) == 16, "fault record layout");

static void lock(struct lu_chipset *c)
{
    while ( __atomic_exchange_n(&c->lock, 1, __ATOMIC_ACQUIRE) )
        while ( __atomic_load_n(&c->lock, __ATOMIC_RELAXED) )
            __builtin_ia32_pause();
}

static void unlock(struct lu_chipset *c)
{
    __atomic_store_n(&c->lock, 0, __ATOMIC_RELEASE);
}

void lu_hw_reset(struct lu_chipset *c)
{
    memset(c, 0, sizeof(*c));
    c->magic = LU_CHIPSET_MAGIC;
    c->version = LU_CHIPSET_VERSION;
}

void lu_hw_command(struct lu_chipset *c, uint32_t gcmd)
{
    struct lu_vtd_regs *r = &c->iommu;

    lock(c);
    r->gcmd = gcmd;
    if ( gcmd & LU_VTD_SRTP )
    {
        r->rtaddr_active = r->rtaddr & ADDR_MASK;
        r->srtp_count++;
        r->gsts |= LU_VTD_SRTP;
    }
    if ( gcmd & LU_VTD_SIRTP )
    {
        r->irta_active = r->irta;
        r->gsts |= LU_VTD_SIRTP;
    }
    if ( (gcmd & LU_VTD_TE) && !(r->gsts & LU_VTD_TE) )
        r->te_enables++;
    r->gsts = (r->gsts & ~(LU_VTD_TE | LU_VTD_QIE | LU_VTD_IRE)) |
              (gcmd & (LU_VTD_TE | LU_VTD_QIE | LU_VTD_IRE));
    unlock(c);
}

/* Drop cached translations: all, one domain's, or one page of one domain. */
static void flush(struct lu_chipset *c, int granularity, uint16_t did, uint64_t iova_pfn)
{
    unsigned int i;

    if ( granularity == LU_INV_GLOBAL )
        c->iommu.global_flushes++;
    for ( i = 0; i < LU_IOTLB_ENTRIES; i++ )
    {
        struct lu_iotlb_entry *e = &c->iotlb[i];

        if ( !e->valid )
            continue;
        if ( granularity == LU_INV_GLOBAL ||
             (granularity == LU_INV_DOMAIN && e->did == did) ||
             (granularity == LU_INV_PAGE && e->did == did && e->iova_pfn == iova_pfn) )
            e->valid = 0;
    }
}

int64_t lu_hw_drain_queue(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames)
{
    struct lu_vtd_regs *r = &c->iommu;
    uint64_t base, done = 0;
    int64_t ret;

    lock(c);
    base = r->iqa & ADDR_MASK;
    if ( !(r->gsts & LU_VTD_QIE) || (base >> PAGE_SHIFT) >= nr_frames )
    {
        ret = r->iqh == r->iqt ? 0 : -1;
        if ( ret )
            r->fsts |= LU_FSTS_IQE;
        unlock(c);
        return ret;
    }
    while ( r->iqh != r->iqt )
    {
        const uint64_t *d = (const uint64_t *)(ram + base + (r->iqh % LU_IQ_ENTRIES) * 16);
        uint64_t lo = d[0], hi = d[1];

        switch ( lo & 0xF )
        {
        case LU_INV_CONTEXT:
            break;                  /* no context cache is modelled */
        case LU_INV_IOTLB:
            flush(c, (int)((lo >> 4) & 3), (uint16_t)(lo >> 16), hi >> PAGE_SHIFT);
            break;
        case LU_INV_WAIT:
            /* Status write: the 32-bit data in lo's high half, to hi. */
            if ( (hi >> PAGE_SHIFT) >= nr_frames || (hi & 3) )
                goto bad;
            __atomic_store_n((uint32_t *)(ram + hi), (uint32_t)(lo >> 32), __ATOMIC_RELEASE);
            break;
        default:
            goto bad;
        }
        r->iqh = (r->iqh + 1) % LU_IQ_ENTRIES;
        r->descriptors_done++;
        done++;
    }
    unlock(c);
    return (int64_t)done;

 bad:
    r->fsts |= LU_FSTS_IQE;
    unlock(c);
    return -1;
}

static int record_fault(struct lu_chipset *c, uint16_t sid, uint64_t iova, int write, int reason)
{
    struct lu_vtd_regs *r = &c->iommu;

    if ( r->nr_faults < LU_FAULT_RECORDS )
    {
        struct lu_fault_record *f = &r->faults[r->nr_faults++];

        f->iova = iova;
        f->sid = sid;
        f->reason = (uint8_t)reason;
        f->write = (uint8_t)!!write;
        r->fsts |= LU_FSTS_PPF;
    }
    else
        r->fsts |= LU_FSTS_PFO;
    return reason;
}

int lu_hw_msi(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint16_t sid, uint32_t index)
{
    uint64_t irt = c->iommu.irta_active & ADDR_MASK, lo, hi;
    int reason = 0;

    lock(c);
    if ( !(c->iommu.gsts & LU_VTD_IRE) || index >= LU_IRT_ENTRIES || (irt >> PAGE_SHIFT) >= nr_frames )
        reason = record_fault(c, sid, index, 1, LU_FAULT_IRTE_NOT_PRESENT);
    else
    {
        lo = ((const uint64_t *)(ram + irt + index * 16))[0];
        hi = ((const uint64_t *)(ram + irt + index * 16))[1];
        if ( !(lo & LU_IRTE_PRESENT) )
            reason = record_fault(c, sid, index, 1, LU_FAULT_IRTE_NOT_PRESENT);
        else if ( lo & LU_IRTE_POSTED )
        {
            uint64_t *pd = (uint64_t *)(ram + (hi & ~(uint64_t)(LU_PI_DESC_SIZE - 1)));
            unsigned int vector = (unsigned int)(lo >> 16) & 0xFF;

            if ( ((hi & ADDR_MASK) >> PAGE_SHIFT) >= nr_frames )
                reason = record_fault(c, sid, index, 1, LU_FAULT_TABLE_BEYOND_RAM);
            else
            {
                __atomic_or_fetch(&pd[vector / 64], 1ull << (vector % 64), __ATOMIC_RELEASE);
                __atomic_or_fetch(&pd[4], (uint64_t)LU_PI_ON, __ATOMIC_RELEASE);
            }
        }
        else
            __atomic_add_fetch(&c->irr[index], 1, __ATOMIC_RELEASE);
    }
    unlock(c);
    return reason;
}

uint32_t lu_hw_take_irr(struct lu_chipset *c, uint32_t index)
{
    return index < LU_IRT_ENTRIES ? __atomic_exchange_n(&c->irr[index], 0, __ATOMIC_ACQ_REL) : 0;
}

void lu_hw_post(uint64_t *pi_desc, uint32_t vector)
{
    __atomic_or_fetch(&pi_desc[(vector & 0xFF) / 64], 1ull << (vector % 64), __ATOMIC_RELEASE);
    __atomic_or_fetch(&pi_desc[4], (uint64_t)LU_PI_ON, __ATOMIC_RELEASE);
}

int lu_hw_posted(const uint64_t *pi_desc)
{
    return (int)(__atomic_load_n(&pi_desc[4], __ATOMIC_ACQUIRE) & LU_PI_ON);
}

static const uint64_t *entry16(const uint8_t *ram, uint64_t table, unsigned int index)
{
    return (const uint64_t *)(ram + table + index * LU_VTD_ENTRY_SIZE);
}

/* root -> context -> 4 levels; -> 0 and the leaf, or a fault reason. */
static int walk(const struct lu_chipset *c, const uint8_t *ram, uint64_t nr_frames, uint16_t sid,
                uint64_t iova, uint64_t *mfn, uint8_t *perm, uint16_t *did)
{
    uint64_t rt = c->iommu.rtaddr_active, ct, table, e = 0;
    const uint64_t *root, *ctx;
    int level;

    if ( (rt >> PAGE_SHIFT) >= nr_frames )
        return LU_FAULT_TABLE_BEYOND_RAM;
    root = entry16(ram, rt, sid >> 8);
    if ( !(root[0] & LU_VTD_PRESENT) )
        return LU_FAULT_ROOT_NOT_PRESENT;
    ct = root[0] & ADDR_MASK;
    if ( (ct >> PAGE_SHIFT) >= nr_frames )
        return LU_FAULT_TABLE_BEYOND_RAM;
    ctx = entry16(ram, ct, sid & 0xFF);
    if ( !(ctx[0] & LU_VTD_PRESENT) )
        return LU_FAULT_CONTEXT_NOT_PRESENT;
    *did = (uint16_t)(ctx[1] >> 8);
    table = ctx[0] & ADDR_MASK;
    *perm = LU_SL_READ | LU_SL_WRITE;
    for ( level = 4; level >= 1; level-- )
    {
        if ( (table >> PAGE_SHIFT) >= nr_frames )
            return LU_FAULT_TABLE_BEYOND_RAM;
        e = ((const uint64_t *)(ram + table))[(iova >> (PAGE_SHIFT + 9 * (level - 1))) & 511];
        if ( !(e & (LU_SL_READ | LU_SL_WRITE)) )
            return LU_FAULT_NOT_PRESENT;
        *perm &= (uint8_t)(e & (LU_SL_READ | LU_SL_WRITE));
        table = e & ADDR_MASK;
    }
    if ( (table >> PAGE_SHIFT) >= nr_frames )
        return LU_FAULT_TABLE_BEYOND_RAM;
    *mfn = table >> PAGE_SHIFT;
    return 0;
}

int lu_hw_translate(struct lu_chipset *c, const uint8_t *ram, uint64_t nr_frames, uint16_t sid,
                    uint64_t iova, int write, uint64_t *maddr)
{
    struct lu_vtd_regs *r = &c->iommu;
    uint64_t pfn = iova >> PAGE_SHIFT, mfn = 0;
    uint8_t need = write ? LU_SL_WRITE : LU_SL_READ, perm = 0;
    uint16_t did = 0;
    unsigned int i;
    int reason;

    lock(c);
    r->translations++;
    if ( !(r->gsts & LU_VTD_TE) )
    {
        reason = record_fault(c, sid, iova, write, LU_FAULT_TRANSLATION_OFF);
        unlock(c);
        return reason;
    }
    for ( i = 0; i < LU_IOTLB_ENTRIES; i++ )
    {
        const struct lu_iotlb_entry *e = &c->iotlb[i];

        if ( e->valid && e->sid == sid && e->iova_pfn == pfn && (e->perm & need) )
        {
            r->iotlb_hits++;
            *maddr = (e->mfn << PAGE_SHIFT) | (iova & (PAGE_SIZE - 1));
            unlock(c);
            return 0;
        }
    }
    reason = walk(c, ram, nr_frames, sid, iova, &mfn, &perm, &did);
    if ( !reason && !(perm & need) )
        reason = write ? LU_FAULT_WRITE_DENIED : LU_FAULT_READ_DENIED;
    if ( reason )
    {
        record_fault(c, sid, iova, write, reason);
        unlock(c);
        return reason;
    }
    {
        struct lu_iotlb_entry *e = &c->iotlb[r->iotlb_next++ % LU_IOTLB_ENTRIES];

        e->iova_pfn = pfn;
        e->mfn = mfn;
        e->sid = sid;
        e->did = did;
        e->perm = perm;
        e->valid = 1;
    }
    *maddr = (mfn << PAGE_SHIFT) | (iova & (PAGE_SIZE - 1));
    unlock(c);
    return 0;
}
