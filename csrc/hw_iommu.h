#ifndef HW_IOMMU_H
#define HW_IOMMU_H

/*
 * The simulated machine's hardware outside the hypervisor: the chipset file
 * (an IOMMU after Intel VT-d, and the registers of passthrough devices) and
 * the IOMMU model that translates the devices' DMA.  Mapped shared by the
 * hypervisor and by every device process; it survives a live update's exec
 * as RAM does.  Layouts: docs/iommu.md.
 */


#define LU_CHIPSET_MAGIC 0x5445535049484343
#define LU_CHIPSET_VERSION 5

#define LU_IOTLB_ENTRIES 64
#define LU_FAULT_RECORDS 16
#define LU_MAX_DEVICES 16

/* GCMD / GSTS bits (VT-d global command and status). */
#define LU_VTD_TE 0x80000000
#define LU_VTD_SRTP 0x40000000
#define LU_VTD_QIE 0x04000000
#define LU_VTD_IRE 0x02000000
#define LU_VTD_SIRTP 0x01000000

/* Root and context entries: 16 bytes, 256 to a 4 KiB table. */
#define LU_VTD_ENTRY_SIZE 16
#define LU_VTD_PRESENT 1
#define LU_VTD_AW_48 2              /* context hi bits 0-2: 4-level tables */

/* Second-level PTEs: read, write, then the address in bits 12-51. */
#define LU_SL_READ 1
#define LU_SL_WRITE 2

/* Invalidation descriptors (16 bytes; type in bits 0-3 of the low word). */
#define LU_INV_CONTEXT 1
#define LU_INV_IOTLB 2
#define LU_INV_WAIT 5
/* IOTLB invalidation granularity, bits 4-5 of the low word. */
#define LU_INV_GLOBAL 1
#define LU_INV_DOMAIN 2
#define LU_INV_PAGE 3
#define LU_IQ_ENTRIES 256

/* Fault reasons (VT-d's numbering where it has one). */
enum lu_fault_reason {
    LU_FAULT_ROOT_NOT_PRESENT = 1,
    LU_FAULT_CONTEXT_NOT_PRESENT = 2,
    LU_FAULT_TABLE_BEYOND_RAM = 3,  /* a table or page address past the end of RAM */
    LU_FAULT_TRANSLATION_OFF = 4,   /* translation disabled: the simulator refuses untranslated DMA */
    LU_FAULT_WRITE_DENIED = 5,
    LU_FAULT_READ_DENIED = 6,
    LU_FAULT_NOT_PRESENT = 7        /* no present second-level entry for the IOVA */
};

/* Interrupt-remapping table entries (16 bytes, 256 to a 4 KiB table):
 * low word bit 0 present, bit 15 posted (IM), bits 16-23 vector, bits 32-63
 * destination; high word the posted-interrupt descriptor's address. */
#define LU_IRTE_PRESENT 1
#define LU_IRTE_POSTED 0x8000
#define LU_IRT_ENTRIES 256
/* A posted-interrupt descriptor: 64 bytes, PIR (256 bits) then the control
 * word, ON in bit 0 (an interrupt is posted, not yet taken). */
#define LU_PI_DESC_SIZE 64
#define LU_PI_ON 1
#define LU_FAULT_IRTE_NOT_PRESENT 0x22     /* VT-d: interrupt remapping fault */

/* FSTS bits. */
#define LU_FSTS_PPF 2               /* a fault is recorded */
#define LU_FSTS_PFO 1               /* faults were lost: the records were full */
#define LU_FSTS_IQE 16              /* a bad invalidation descriptor */

struct lu_fault_record {
    uint64_t iova;
    uint16_t sid;                   /* source id: bus << 8 | devfn */
    uint8_t reason;
    uint8_t write;
    uint32_t reserved;
};

struct lu_iotlb_entry {
    uint64_t iova_pfn;
    uint64_t mfn;
    uint16_t sid;
    uint16_t did;
    uint8_t perm;                   /* LU_SL_READ | LU_SL_WRITE */
    uint8_t valid;
    uint8_t reserved[2];
};

struct lu_vtd_regs {
    uint32_t gcmd;
    uint32_t gsts;
    uint64_t rtaddr;                /* RTADDR as software wrote it */
    uint64_t rtaddr_active;         /* what the last SRTP latched: translation uses it */
    uint64_t irta;
    uint64_t irta_active;
    uint64_t iqa;                   /* queue base (page aligned) */
    uint64_t iqh;                   /* head: next descriptor index the IOMMU reads */
    uint64_t iqt;                   /* tail: software's next free index */
    uint32_t fsts;
    uint32_t nr_faults;             /* records in use, oldest first */
    struct lu_fault_record faults[16];
    /* Counts, for the verifier and the report. */
    uint64_t srtp_count;            /* root-table pointer latches */
    uint64_t te_enables;            /* translation-enable transitions 0 -> 1 */
    uint64_t global_flushes;        /* global IOTLB invalidations */
    uint64_t descriptors_done;
    uint64_t translations;          /* requests translated */
    uint64_t iotlb_hits;
    uint64_t iotlb_next;            /* round-robin replacement */
};

/*
 * A passthrough device's registers (its BAR), one slot each: a NIC whose
 * rings are in its guest's memory (hw_nic.h).  The device process runs
 * while state is LU_DEV_RUNNING; the hypervisor's driver programs
 * dma_iova, the first of the guest's NIC pages.  Each round's completion
 * time goes in a ring, and so does each packet dropped, so that what the
 * device did in any window (a live update's blackout) can be counted
 * afterwards.
 */
#define LU_DMA_LOG 16384
enum lu_dev_state { LU_DEV_FREE = 0, LU_DEV_RUNNING = 1, LU_DEV_STOPPING = 2 };
enum lu_dev_kind { LU_DEV_NIC = 1 };

struct lu_device_regs {
    uint16_t sid;                   /* bus << 8 | devfn */
    uint8_t state;                  /* enum lu_dev_state */
    uint8_t kind;                   /* enum lu_dev_kind */
    uint32_t pid;                   /* the device process, once it runs */
    uint64_t dma_iova;              /* the guest's NIC pages: page-aligned */
    uint64_t period_ns;             /* between two rounds */
    uint64_t seq;                   /* rounds done: packets the wire brought */
    uint64_t dma_ops;               /* status writes completed, one a round */
    uint64_t dma_faults;            /* rounds the IOMMU cut short */
    uint64_t log_next;              /* next slot of log */
    /* Its MSI, through interrupt remapping entry msi_index; masked until
     * the guest's driver takes it (writes irq_outstanding back to 0), as a
     * NIC's auto-masked vector: a lost interrupt starves the device. */
    uint32_t msi_index;
    uint32_t irq_outstanding;
    uint64_t irq_sent_seq;          /* the round its outstanding MSI was for */
    uint64_t msis_sent;
    uint64_t rx_delivered;          /* packets written into a posted buffer */
    uint64_t rx_dropped;            /* packets dropped: no buffer posted */
    uint64_t tx_sent;               /* packets the driver queued, sent */
    uint64_t tx_bad;                /* of them, with a wrong checksum */
    uint64_t tx_out_of_order;       /* or not the number due */
    uint64_t drop_next;             /* next slot of drop_log */
    uint64_t log[16384];            /* round completion times, CLOCK_MONOTONIC ns */
    uint64_t drop_log[16384];       /* times of dropped packets */
};

struct lu_chipset {
    uint64_t magic;
    uint32_t version;
    uint32_t lock;                  /* spinlock over the IOMMU model */
    struct lu_vtd_regs iommu;
    struct lu_iotlb_entry iotlb[64];
    struct lu_device_regs dev[16];
    /* Remapped (not posted) interrupts waiting for the CPU, per remapping
     * entry: the hypervisor's handler takes them; a kexec'd hypervisor
     * starts with none (its interrupt controller is reset). */
    uint32_t irr[256];
};

/* A new chipset: magic and version, the IOMMU off, nothing cached. */
void lu_hw_reset(struct lu_chipset *c);

/*
 * Software writes GCMD: the model updates GSTS.  SRTP latches rtaddr (and
 * counts it), SIRTP irta; TE and QIE follow their bits.  As on VT-d,
 * latching a root pointer flushes nothing: software must invalidate.
 */
void lu_hw_command(struct lu_chipset *c, uint32_t gcmd);

/*
 * The IOMMU consumes queued invalidation descriptors from IQH up to IQT
 * (queue in RAM at IQA); -> descriptors done, or -1 after a bad one (IQE
 * set, IQH left on it).
 */
int64_t lu_hw_drain_queue(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames);

/*
 * A device's DMA request for the byte at iova: IOTLB, else a walk of the
 * root, context and second-level tables.  -> 0 and *maddr, or the fault
 * reason (recorded in the fault log, the request dropped).
 */
int lu_hw_translate(struct lu_chipset *c, const uint8_t *ram, uint64_t nr_frames, uint16_t sid,
                    uint64_t iova, int write, uint64_t *maddr);

/*
 * The device process's work: while its slot runs, a round every period_ns
 * (lu_dev_round); -> the number of rounds done when the slot stops running.
 */
uint64_t lu_dev_run(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint32_t slot);

/*
 * One round of the NIC at time now_ns, every access to guest memory a DMA
 * through the IOMMU: a packet arrives from the wire (into the next posted
 * RX buffer, or dropped and counted when none is posted); every packet the
 * driver queued is sent (its checksum and number checked); the status block
 * gets {seq, now_ns}; an MSI unless one is still untaken.  A translation
 * fault ends the round (counted in dma_faults; the IOMMU logged it).
 * -> 0, or -1 after a fault.
 */
int lu_dev_round(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint32_t slot, uint64_t now_ns);

/*
 * A device's MSI through interrupt remapping entry index: posted (the PIR
 * bit and ON set in the descriptor), or remapped (irr[index] raised for the
 * CPU).  -> 0, or a fault reason (recorded) when the entry is not present.
 */
int lu_hw_msi(struct lu_chipset *c, uint8_t *ram, uint64_t nr_frames, uint16_t sid, uint32_t index);

/* The CPU's side of remapped interrupts: take (and clear) what waits at
 * irr[index]; post an interrupt into a descriptor as software does (the
 * PIR bit and ON); whether a descriptor has one posted. */
uint32_t lu_hw_take_irr(struct lu_chipset *c, uint32_t index);
void lu_hw_post(uint64_t *pi_desc, uint32_t vector);
int lu_hw_posted(const uint64_t *pi_desc);

/* How many logged rounds fall in [from_ns, to_ns], and the longest time
 * without one inside that window (from its start to the first, between
 * two, from the last to its end), in *max_gap_ns. */
uint64_t lu_dev_window(const struct lu_device_regs *d, uint64_t from_ns, uint64_t to_ns,
                       uint64_t *max_gap_ns);
/* How many packets the device dropped in [from_ns, to_ns]. */
uint64_t lu_dev_drops_in(const struct lu_device_regs *d, uint64_t from_ns, uint64_t to_ns);

#endif /* HW_IOMMU_H */
