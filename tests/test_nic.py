"""The passthrough NIC and its guest's driver, one step at a time
(csrc/hw_nic.h, docs/iommu.md): the device's rounds (lu_dev_round) and the
driver (lu_nic_drive) called by hand on a hypervisor inside the test, its
devices unpowered, so that nothing moves but what the test does.  The
packets are read back by the format the header documents, checked with a
checksum computed here, not by the code under test."""
import struct

import pytest

from hyperv_sim._lu_core import ffi as core_ffi, lib as core
from hyperv_sim._lu_hw import ffi, lib as hw
from hyperv_sim.chipset import parse_bdf
from hyperv_sim.guest import P2M

from helpers import NIC_BDF

PAGE = 4096
NIC = NIC_BDF
RING = 64
PACKET = struct.Struct("<QQQ36sI")      # seq, drops, time, payload, checksum
DESC = struct.Struct("<QII")            # buffer IOVA, length, flags
INDICES = struct.Struct("<IIII")        # rx_posted, rx_filled, tx_queued, tx_sent
COUNTS = struct.Struct("<IIQQQQQQQQQ")   # magic, rx_taken, rx_ok, dropped seen, bad, out of order,
#                                         last seq, last drops, first bad seq, the number due then, bad pending
DONE = 1


def fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def payload(seq):
    return bytes((seq * 131 + i * 7) & 0xFF for i in range(36))


class Nic:
    """A NIC slot programmed by hand beside a domain, its device rounds and
    its driver run one call at a time."""

    def __init__(self, hv):
        self.hv = hv
        self.dom = next(d for d in hv.domains.values() if d.name == "nic")
        self.p2m = P2M(self.dom.p2m)
        self.iova = self.dom.layout.dma_gfn * PAGE
        self.slot = 0
        d = self.regs = hv.chipset.c.dev[self.slot]
        d.sid, d.kind, d.dma_iova, d.msi_index = parse_bdf(NIC), hw.LU_DEV_NIC, self.iova, self.slot
        hv.iommu.route_interrupt(self.slot, self.dom.domid)
        d.state = hw.LU_DEV_RUNNING
        self.driver = core_ffi.new("struct lu_nic *")
        self.driver.pi_desc = hv.iommu.pi_desc(self.slot)
        self.driver.dev_ack = ffi.addressof(d, "irq_outstanding")
        self.driver.iova = self.iova
        for i in range(3):
            self.driver.page[i] = hv.ram.pointer(self.maddr(self.iova + i * PAGE), "uint8_t *")
        self.now = 1_000_000

    def maddr(self, iova):
        return self.p2m.mfn(iova // PAGE) * PAGE + iova % PAGE

    def read(self, iova, n):
        return self.hv.ram.read(self.maddr(iova), n)

    def write(self, iova, data):
        self.hv.ram.write(self.maddr(iova), data)

    def round(self):
        self.now += 100_000
        return hw.lu_dev_round(self.hv.chipset.c, self.hv.ram.base, self.hv.ram.nr_frames, self.slot, self.now)

    def drive(self):
        core.lu_nic_drive(self.driver)

    def rx_packet(self, i):
        return PACKET.unpack(self.read(self.iova + PAGE + i * 64, 64))

    def rx_desc(self, i):
        return DESC.unpack(self.read(self.iova + 1024 + i * 16, 16))

    def indices(self):
        return INDICES.unpack(self.read(self.iova + 128, 16))

    def counts(self):
        c = COUNTS.unpack(self.read(self.iova + 192, COUNTS.size))
        return dict(zip(("magic", "rx_taken", "rx_ok", "dropped_seen", "bad", "out_of_order", "last_seq",
                         "last_drops", "first_bad_seq", "first_bad_due", "bad_pending"), c))


@pytest.fixture
def nic(nic_hv):
    n = Nic(nic_hv)
    n.drive()                           # the driver sets up its rings
    return n


def test_the_driver_posts_every_buffer_at_setup(nic):
    assert nic.counts()["magic"] == 0x4E494331
    assert nic.indices() == (RING, 0, 0, 0)
    assert [nic.rx_desc(i) for i in range(RING)] == [(nic.iova + PAGE + i * 64, 64, 0) for i in range(RING)]


def test_a_packet_arrives_intact_and_is_answered(nic):
    assert nic.round() == 0
    seq, drops, t, body, csum = nic.rx_packet(0)
    raw = nic.read(nic.iova + PAGE, 64)
    assert (seq, drops, t, body) == (1, 0, nic.now, payload(1))
    assert csum == fnv1a(raw[:60])
    assert nic.rx_desc(0) == (nic.iova + PAGE, 64, DONE)
    assert nic.indices() == (RING, 1, 0, 0)
    assert struct.unpack("<QQ", nic.read(nic.iova, 16)) == (1, nic.now)      # the status block
    assert hw.lu_hw_posted(nic.hv.iommu.pi_desc(nic.slot))                  # and an MSI, posted
    nic.drive()
    c = nic.counts()
    assert (c["rx_taken"], c["rx_ok"], c["bad"], c["out_of_order"], c["last_seq"]) == (1, 1, 0, 0, 1)
    assert nic.indices() == (RING + 1, 1, 1, 0)                             # reposted, one answer queued
    assert nic.regs.irq_outstanding == 0                                    # unmasked
    sent = PACKET.unpack(nic.read(nic.iova + 2 * PAGE, 64))
    assert sent[:2] == (1, 0) and sent[4] == fnv1a(nic.read(nic.iova + 2 * PAGE, 60))
    assert nic.round() == 0
    assert (nic.regs.tx_sent, nic.regs.tx_bad, nic.regs.tx_out_of_order) == (1, 0, 0)
    assert nic.indices()[3] == 1


def test_a_full_ring_drops_and_the_driver_accounts_for_every_number(nic):
    for _ in range(RING):
        assert nic.round() == 0
    start = nic.now
    for _ in range(10):
        assert nic.round() == 0
    assert (nic.regs.rx_delivered, nic.regs.rx_dropped) == (RING, 10)
    assert hw.lu_dev_drops_in(ffi.addressof(nic.regs), start, nic.now) == 10
    assert hw.lu_dev_drops_in(ffi.addressof(nic.regs), 0, start) == 0
    nic.drive()
    assert nic.counts()["rx_ok"] == RING
    assert nic.round() == 0
    assert nic.rx_packet(0)[:2] == (RING + 10 + 1, 10)                  # the next number, after 10 dropped
    nic.regs.irq_outstanding = 0
    hw.lu_hw_post(nic.hv.iommu.pi_desc(nic.slot), 0x40)
    nic.drive()
    c = nic.counts()
    assert (c["rx_ok"], c["dropped_seen"], c["last_seq"], c["out_of_order"], c["bad"]) == (RING + 1, 10, 75, 0, 0)
    assert c["rx_ok"] + c["dropped_seen"] == c["last_seq"]


def take_all(nic):
    nic.regs.irq_outstanding = 0
    hw.lu_hw_post(nic.hv.iommu.pi_desc(nic.slot), 0x40)
    nic.drive()


def test_the_driver_catches_a_corrupted_packet(nic):
    for _ in range(3):
        nic.round()
    raw = bytearray(nic.read(nic.iova + PAGE + 64, 64))
    raw[30] ^= 1
    nic.write(nic.iova + PAGE + 64, bytes(raw))                            # packet 2, in flight
    take_all(nic)
    c = nic.counts()
    # Counted once: the packet after it is in order.
    assert (c["rx_ok"], c["bad"], c["out_of_order"], c["first_bad_seq"], c["first_bad_due"]) == (2, 1, 0, 2, 2)


def test_the_driver_catches_a_packet_received_twice_and_one_lost(nic):
    for _ in range(4):
        nic.round()
    nic.write(nic.iova + PAGE + 2 * 64, nic.read(nic.iova + PAGE + 64, 64))   # packet 2 again, for 3
    take_all(nic)
    c = nic.counts()
    assert (c["bad"], c["out_of_order"], c["first_bad_seq"], c["first_bad_due"]) == (0, 2, 2, 3)
    # Then 4 came where 3 was due: packet 3 is lost, and that counts too.


def test_the_device_catches_a_corrupted_packet_to_send(nic):
    nic.round()
    take_all(nic)                                                          # one answer queued
    raw = bytearray(nic.read(nic.iova + 2 * PAGE, 64))
    raw[40] ^= 0x80
    nic.write(nic.iova + 2 * PAGE, bytes(raw))
    nic.round()
    assert (nic.regs.tx_sent, nic.regs.tx_bad, nic.regs.tx_out_of_order) == (1, 1, 0)


def test_a_buffer_the_iommu_refuses_holds_the_packet_for_the_next_round(nic):
    outside = nic.dom.nr_frames * PAGE
    nic.write(nic.iova + 1024, DESC.pack(outside, 64, 0))
    assert nic.round() == -1
    assert (nic.regs.dma_faults, nic.regs.rx_delivered, nic.regs.rx_dropped, nic.regs.seq) == (1, 0, 0, 0)
    assert nic.hv.chipset.faults() == [(parse_bdf(NIC), outside, hw.LU_FAULT_NOT_PRESENT, True)]
    nic.write(nic.iova + 1024, DESC.pack(nic.iova + PAGE, 64, 0))
    assert nic.round() == 0
    assert nic.rx_packet(0)[:2] == (1, 0)                                  # the same packet, not lost


def test_indices_no_driver_could_have_written_move_nothing(nic):
    """More buffers posted, or packets queued, than a ring holds: the device
    takes none of them (it would overrun the ring) and drops what comes."""
    nic.write(nic.iova + 128, INDICES.pack(RING + 5, 0, RING + 5, 0))
    assert nic.round() == 0
    assert (nic.regs.rx_delivered, nic.regs.rx_dropped, nic.regs.tx_sent) == (0, 1, 0)
    assert nic.indices() == (RING + 5, 0, RING + 5, 0)


def test_verify_knows_whether_the_guests_driver_is_connected(nic):
    """The domain was built with its device unpowered, so no driver: verify
    says so; connected, as the builder and xen#2 do, it says nothing; a
    driver on the wrong pages is named too."""
    from hyperv_sim.devices import connect_drivers
    from hyperv_sim.verify import driver_problem
    hv, dom = nic.hv, nic.dom
    assert driver_problem(hv, dom, nic.slot) == "d%d's driver is not connected to it (vCPU 0 drives 0 NICs)" % dom.domid
    connect_drivers(hv, dom)
    assert dom.vcpu_state[0].nr_nics == 1
    assert driver_problem(hv, dom, nic.slot) is None
    dom.vcpu_state[0].nics[0].page[1] = dom.vcpu_state[0].nics[0].page[2]
    assert driver_problem(hv, dom, nic.slot) == ("d%d's driver of it works other pages or another interrupt "
                                                 "than the device's" % dom.domid)


def test_a_corrupted_packet_after_drops_is_one_bad_packet_and_the_drops_are_seen(nic):
    """The first packet after a full ring's drops arrives corrupted: it
    counts as bad, once; the next intact one accounts for the drops and
    for the number the bad one took."""
    for _ in range(RING + 10):
        nic.round()
    take_all(nic)                                   # 64 taken, 10 dropped
    nic.round()                                     # packet 75, drops 10, in buffer 0
    raw = bytearray(nic.read(nic.iova + PAGE, 64))
    raw[8] ^= 0x40                                  # its drops field, even
    nic.write(nic.iova + PAGE, bytes(raw))
    nic.round()                                     # packet 76, intact
    take_all(nic)
    c = nic.counts()
    assert (c["rx_ok"], c["bad"], c["out_of_order"], c["dropped_seen"], c["last_seq"]) == (RING + 1, 1, 0, 10, 76)
    assert c["first_bad_seq"] == 75
    assert c["rx_ok"] + c["bad"] + c["dropped_seen"] == c["last_seq"]
