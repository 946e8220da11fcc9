#ifndef HW_NIC_H
#define HW_NIC_H

/*
 * The passthrough NIC's interface with its guest's driver: everything in
 * guest memory, LU_NIC_PAGES pages from the IOVA the device is given, and
 * every access the device makes to it is DMA through the IOMMU
 * (docs/iommu.md).  Page 0: the device's status block ({sequence, time}),
 * the driver's interrupt record, the ring indices, the driver's counts, the
 * RX and TX descriptor rings.  Page 1: the RX buffers; page 2: the TX
 * buffers; one packet each.  Shared by the device (hw_device.c) and the
 * guest's driver (lu_workload.c); nic_format.c is in both modules.
 */
#define LU_NIC_PAGES 3
#define LU_NIC_RING 64              /* descriptors per ring */
#define LU_NIC_PACKET 64            /* bytes: a packet, a buffer */
#define LU_NIC_PAYLOAD 36
/* Offsets in page 0. */
#define LU_NIC_IRQ_RECORD 64        /* driver: {interrupts taken, status sequence seen} */
#define LU_NIC_INDICES 128          /* struct lu_nic_indices */
#define LU_NIC_COUNTS 192           /* struct lu_nic_counts */
#define LU_NIC_RX_RING 1024         /* struct lu_nic_desc[LU_NIC_RING] */
#define LU_NIC_TX_RING 2048
#define LU_NIC_DONE 1               /* descriptor flag: the device is done with it */
#define LU_NIC_MAGIC 0x4e494331     /* the driver has set up its rings */

struct lu_nic_desc {
    uint64_t addr;                  /* IOVA of the buffer */
    uint32_t len;
    uint32_t flags;
};

/* Free-running counts; a count's ring index is count % LU_NIC_RING. */
struct lu_nic_indices {
    uint32_t rx_posted;             /* driver: buffers given to the device */
    uint32_t rx_filled;             /* device: buffers it wrote a packet into */
    uint32_t tx_queued;             /* driver: packets given to send */
    uint32_t tx_sent;               /* device: packets sent */
};

/* Every packet the wire brings is numbered, whether the device delivers it
 * or drops it for a full ring; each delivered one says how many were
 * dropped before it, so the driver accounts for every number. */
struct lu_nic_packet {
    uint64_t seq;
    uint64_t drops;
    uint64_t time_ns;
    uint8_t payload[36];
    uint32_t csum;                  /* FNV-1a over the 60 bytes before it */
};

/* The guest driver's own record, in its memory: what verify reads. */
struct lu_nic_counts {
    uint32_t magic;                 /* LU_NIC_MAGIC once the rings are set up */
    uint32_t rx_taken;              /* buffers taken back from the device */
    uint64_t rx_ok;                 /* received intact and in order */
    uint64_t rx_dropped_seen;       /* packets the device said it dropped */
    uint64_t rx_bad;                /* checksum wrong (each took a number) */
    uint64_t rx_out_of_order;       /* not the number due: one lost, or one twice */
    uint64_t last_seq, last_drops;  /* of the last packet taken */
    uint64_t first_bad_seq;         /* the first bad or out-of-order packet, */
    uint64_t first_bad_due;         /* and the number that was due then */
    uint64_t bad_pending;           /* corrupted packets since the last intact one */
};

/* FNV-1a, 32 bits, over a packet's first 60 bytes. */
uint32_t lu_nic_csum(const struct lu_nic_packet *p);
/* A packet as the wire (RX) or the driver (TX) makes it: payload from seq, checksum. */
void lu_nic_make(struct lu_nic_packet *p, uint64_t seq, uint64_t drops, uint64_t time_ns);

#endif /* HW_NIC_H */
