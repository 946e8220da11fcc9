/*
 * The NIC's packet format (hw_nic.h), compiled into both the hardware
 * model and the C core: the device makes and checks packets with it, and
 * so does the guest's driver.
 */
#include <stddef.h>
#include <stdint.h>

#include "hw_nic.h"

_Static_assert(sizeof(struct lu_nic_packet) == LU_NIC_PACKET, "packet size");
_Static_assert(offsetof(struct lu_nic_packet, csum) == LU_NIC_PACKET - 4, "checksum last");
_Static_assert(LU_NIC_RX_RING + LU_NIC_RING * sizeof(struct lu_nic_desc) <= LU_NIC_TX_RING, "RX ring");
_Static_assert(LU_NIC_TX_RING + LU_NIC_RING * sizeof(struct lu_nic_desc) <= 4096, "TX ring");
_Static_assert(LU_NIC_COUNTS + sizeof(struct lu_nic_counts) <= LU_NIC_RX_RING, "counts");
_Static_assert(LU_NIC_RING * LU_NIC_PACKET == 4096, "a page of buffers per ring");

uint32_t lu_nic_csum(const struct lu_nic_packet *p)
{
    const uint8_t *b = (const uint8_t *)p;
    uint32_t h = 2166136261u;
    size_t i;

    for ( i = 0; i < offsetof(struct lu_nic_packet, csum); i++ )
        h = (h ^ b[i]) * 16777619u;
    return h;
}

void lu_nic_make(struct lu_nic_packet *p, uint64_t seq, uint64_t drops, uint64_t time_ns)
{
    unsigned int i;

    p->seq = seq;
    p->drops = drops;
    p->time_ns = time_ns;
    for ( i = 0; i < LU_NIC_PAYLOAD; i++ )
        p->payload[i] = (uint8_t)(seq * 131 + i * 7);
    p->csum = lu_nic_csum(p);
}
