"""The benchmark hosts: sizes, and the guests that fill them.

Shared by `python -m bench` and `python -m bench.profile_save`, so both
measure the same mix.
"""
GiB, MiB = 1 << 30, 1 << 20
TiB = 1 << 40

HOSTS = {
    # name: (RAM, domains including dom0)
    "floor": (4 * GiB, 1),
    "S": (4 * GiB, 8),
    "M": (16 * GiB, 16),
    "L": (64 * GiB, 64),
    "XL": (256 * GiB, 256),
    "XXL": (TiB, 1024),
    # The RAM series: L's guests, the same 64 domains of the same sizes,
    # on more RAM (GUESTS_OF).
    "L-256G": (256 * GiB, 64),
    "L-1T": (TiB, 64),
    # The domain series: L's 64 GiB with fewer or more domains.
    "L-16d": (64 * GiB, 16),
    "L-256d": (64 * GiB, 256),
    "L-1024d": (64 * GiB, 1024),
}
# Two series, each growing one factor with the other fixed: what grows
# with host RAM, and what grows with domains.
RAM_SERIES = ("L", "L-256G", "L-1T")
# Hosts that run another host's guests: the RAM series grows host RAM alone,
# so its slope is what free memory costs (issue 17: "a 1 TiB host costs
# <= 50 ms more than a 64 GiB one with the same guests").
GUESTS_OF = {"L-256G": "L", "L-1T": "L"}
DOMAIN_SERIES = ("L-16d", "L", "L-256d", "L-1024d")
ALL_HOSTS = ("floor", "S", "L", "XL", "XXL", "L-256G", "L-1T", "L-16d", "L-256d", "L-1024d")
# Guests flat out (workload_rate=max): the update is measured on busy hosts.
CMDLINE = "liveupdate=64M dom0_mem=512M dom0_max_vcpus=2 workload_rate=max"
# Hosts whose guests exceed the disks this runs on: their frames are not
# reserved on disk (ram_sparse; hyperv-sim(8)), the others' are.
SPARSE_ABOVE = 64 * GiB
# Host L carries passthrough NICs, on two HVM guests and a PV one
# (docs/iommu.md): the report says what each did in the blackout.  So does
# every host of the two series, so that a slope compares like with like.
DEVICE_HOSTS = tuple(dict.fromkeys(("L",) + RAM_SERIES + DOMAIN_SERIES))
NIC_BDFS = ("0000:03:00.0", "0000:03:01.0", "0000:04:00.0")


def cmdline_for(name):
    return CMDLINE + (" ram_sparse" if HOSTS[name][0] > SPARSE_ABOVE else "")


def guests_for(name):
    """The guests host `name` runs, NICs included where it carries them."""
    ram, domains = HOSTS[GUESTS_OF.get(name, name)]
    return guest_configs(ram, domains, devices=name in DEVICE_HOSTS)


def guest_configs(ram, domains, devices=False):
    """About 3/4 of RAM over domains-1 guests, PV, PVH and HVM in turn,
    2 vCPUs each, event channel ABIs and grant versions alternating; with
    devices, the first two HVM guests and the first PV one get a NIC each."""
    n = domains - 1
    if not n:
        return []
    each = max(32, (ram * 3 // 4 - 512 * MiB) // n // MiB)
    types = ["pv", "pvh", "hvm"]
    configs = [dict(name="g%d" % i, type=types[i % 3], memory=each * MiB, vcpus=2,
                    event_channel_abi="fifo" if i % 2 else "2-level", grant_version=1 + i % 2)
               for i in range(n)]
    if devices:
        hvm = [c for c in configs if c["type"] == "hvm"][:2]
        pv = [c for c in configs if c["type"] == "pv"][:1]
        for cfg, bdf in zip(hvm + pv, NIC_BDFS):
            cfg["pci"] = [bdf]
    return configs
