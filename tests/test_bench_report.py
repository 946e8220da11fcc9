"""What `make bench` writes besides its numbers: the blackout no phase
covers, a phase table that says why its columns need not add up, and a plot
whose legend hides no bar; and that the in-process profiler still runs."""
import subprocess
import sys

import pytest

from bench.__main__ import OUTSIDE_BLACKOUT, bare_interpreter_ms, device_summary, figure, markdown, series_figure, \
    series_slopes, unclaimed_ms, verdicts
from bench.hosts import HOSTS, RAM_SERIES, guest_configs, guests_for
from helpers import REPO

MS = 1_000_000


def phase(name, start_ms, end_ms):
    return {"name": name, "start_ns": int(start_ms * MS), "end_ns": int(end_ms * MS),
            "ms": end_ms - start_ms}


def report(blackout_ms):
    # quiesce 0-10 (first pause at 5), save 10-12, nothing 12-13, exec 13-20,
    # then the free frames' entries 20-24 and the scrub 24-30 with the
    # guests running.
    return {"blackout_ms": blackout_ms, "phases": [
        phase("preflight", -3, 0), phase("quiesce", 0, 10), phase("save", 10, 12),
        phase("exec", 13, 20), phase("frametable-deferred", 20, 24), phase("scrub", 24, 30)]}


def test_unclaimed_is_the_gap_no_phase_covers():
    assert OUTSIDE_BLACKOUT == ("preflight", "frametable-deferred", "scrub")
    # Blackout 5..20: quiesce covers 5 ms of it, save 2, exec 7; 1 ms is nobody's.
    assert abs(unclaimed_ms(report(15.0)) - 1.0) < 1e-9
    # From the first phase on: the 1 ms gap still, nothing before.
    assert abs(unclaimed_ms(report(20.0)) - 1.0) < 1e-9


def result(host, blackout, **phases):
    return {"host": host, "ram": 1 << 30, "domains": 1, "guest_frames": 0, "blackout_ms": blackout,
            "guest_steady_max_gap_ms": 0.0, "guest_max_gap_ms": 0.0, "stream_bytes": 0,
            "stream_extents": 0, "private_peak_kib": 0, "phases_ms": phases,
            "between_phases_ms": 0.7, "baseline": None}


def test_the_phase_table_adds_up_and_says_why_it_need_not():
    text = markdown([result("floor", 20.0, preflight=3.0, quiesce=4.0, save=6.0, exec=9.5,
                            scrub=10.0, **{"frametable-deferred": 5.0})],
                    "test machine", None, None, [])
    head = next(l for l in text.splitlines() if l.startswith("| host | preflight"))
    assert head.endswith("| sum | between phases | blackout |")
    row = next(l for l in text.splitlines() if l.startswith("| floor | 3.0"))
    # 4 + 6 + 9.5 inside; preflight, frametable-deferred and scrub are not.
    assert row.endswith("| 19.5 | 0.7 | 20.0 |")
    assert "need not add up to the blackout" in text


SPREAD = [result("floor", 26.0, quiesce=1, save=2, exec=12, **{"start-up": 7, "frametable": 2}),
          result("L", 69.0, quiesce=5, save=10, exec=14, **{"restore-pass1": 12, "restore-pass0": 8}),
          result("XL", 195.0, quiesce=9, save=43, exec=14, **{"restore-pass1": 49, "restore-pass2": 13})]
# Bars of one height leave no empty corner inside the axes for a legend.
LEVEL = [result(h, 60.0, quiesce=10, save=10, exec=20, **{"restore-pass1": 10, "unpause": 10})
         for h in ("floor", "S", "L", "XL")]


@pytest.mark.parametrize("results", [SPREAD, LEVEL], ids=["spread", "level"])
def test_the_legend_covers_no_bar(results):
    fig = figure(results)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches if p.get_height() > 0]
    assert len(bars) >= 3 * len(results)
    assert not [b for b in bars if b.overlaps(legend)]
    # and the legend is on the figure, not cut off
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)


def test_the_floor_is_judged_against_a_bare_interpreter_start_of_the_same_run():
    bare = bare_interpreter_ms(3)
    assert 0 < bare < 5000
    (floor,) = [v for v in verdicts([result("floor", 3 * bare)], None, None, bare) if v[0].startswith("floor")]
    assert floor == ("floor <= 2 x a bare interpreter start (%.1f ms)" % bare, "3.00 x", False)
    (floor,) = [v for v in verdicts([result("floor", 1.5 * bare)], None, None, bare) if v[0].startswith("floor")]
    assert floor[1:] == ("1.50 x", True)
    assert not [v for v in verdicts([result("floor", 20.0)], None, None, None) if v[0].startswith("floor")]


def test_the_ram_series_grows_host_ram_under_the_same_guests():
    """Its slope is what more free memory costs: L-256G and L-1T run L's
    guests, the same number, types and sizes, NICs included."""
    assert [HOSTS[h][0] >> 30 for h in RAM_SERIES] == [64, 256, 1024]
    for host in RAM_SERIES:
        assert guests_for(host) == guests_for("L")
    # The domain series, and the other hosts, fill their own RAM.
    assert sum(c["memory"] for c in guests_for("XL")) > 3 * sum(c["memory"] for c in guests_for("L"))


def test_host_ls_nics_are_summed_up_per_device():
    """Two HVM guests and a PV one with a NIC each, and per device what it
    did over the runs: rounds (median, least), longest stall, drops (median,
    most)."""
    with_nics = [c for c in guest_configs(64 << 30, 64, devices=True) if "pci" in c]
    assert sorted(c["type"] for c in with_nics) == ["hvm", "hvm", "pv"]
    assert len({c["pci"][0] for c in with_nics}) == 3
    assert not any("pci" in c for c in guest_configs(64 << 30, 64))

    def dev(bdf, ops, stall, dropped):
        return {"bdf": bdf, "dma_ops_in_blackout": ops, "max_dma_stall_ms": stall, "dropped": dropped,
                "interrupts_held": 1}
    reports = [{"devices": [dev("0000:03:00.0", 300, 1.5, 200), dev("0000:04:00.0", 280, 0.4, 210)]},
               {"devices": [dev("0000:03:00.0", 320, 4.0, 260), dev("0000:04:00.0", 290, 0.3, 190)]},
               {"devices": [dev("0000:03:00.0", 310, 2.0, 230), dev("0000:04:00.0", 270, 0.5, 230)]}]
    summary = device_summary(reports)
    assert summary == [
        {"bdf": "0000:03:00.0", "dma_ops_in_blackout_median": 310, "dma_ops_in_blackout_min": 300,
         "max_dma_stall_ms": 4.0, "dropped_median": 230, "dropped_max": 260},
        {"bdf": "0000:04:00.0", "dma_ops_in_blackout_median": 280, "dma_ops_in_blackout_min": 270,
         "max_dma_stall_ms": 0.5, "dropped_median": 210, "dropped_max": 230}]
    text = markdown([dict(result("L", 60.0, save=1.0), devices=summary)], "test machine", None, None, [])
    assert "Passthrough NICs on host L" in text
    assert "| 0000:03:00.0 | 310 / 300 | 4.00 | 230 / 260 |" in text
    assert "| 0000:04:00.0 | 280 / 270 | 0.50 | 210 / 230 |" in text


def sized(host, ram_gib, domains, blackout, **extra):
    return dict(result(host, blackout, save=1.0), ram=ram_gib << 30, domains=domains, **extra)


# Exactly linear: 0.04 ms per GiB under L's 64 guests, 0.3 ms per domain over 64 GiB.
SERIES = [sized("floor", 4, 1, 20.0), sized("L-16d", 64, 16, 40.0), sized("L", 64, 64, 54.4),
          sized("L-256d", 64, 256, 112.0), sized("L-1024d", 64, 1024, 342.4), sized("L-256G", 256, 64, 62.08),
          sized("L-1T", 1024, 64, 92.8)]


def test_each_series_grows_one_factor_and_gives_its_own_slope():
    slopes = series_slopes(SERIES)
    assert slopes["ram"]["hosts"] == ["L", "L-256G", "L-1T"]
    assert slopes["domains"]["hosts"] == ["L-16d", "L", "L-256d", "L-1024d"]
    assert abs(slopes["ram"]["ms_per_gib"] - 0.04) < 1e-9
    assert abs(slopes["domains"]["ms_per_domain"] - 0.3) < 1e-9
    # A series needs two of its hosts.
    assert series_slopes([r for r in SERIES if r["host"] in ("floor", "L", "L-16d")]) == {
        "domains": {"hosts": ["L-16d", "L"], "ms_per_domain": (54.4 - 40.0) / 48}}
    checks = {t: (m, ok) for t, m, ok in verdicts(SERIES, slopes, None)}
    assert checks["<= 0.05 ms per GiB of host RAM (L, L-256G, L-1T, L's 64 guests)"] == ("0.040 ms", True)
    assert checks["<= 0.25 ms per domain (L-16d, L, L-256d, L-1024d, 64 GiB)"] == ("0.300 ms", False)
    assert checks["host L <= 1.5 x floor"] == ("2.72 x (54.4 ms)", False)
    text = markdown(SERIES, "test machine", slopes, None, [])
    assert "RAM series (L's 64 guests): 0.040 ms per GiB." in text
    assert "| L-1T | 1 TiB | 64 | 92.8 | save 1.0 |" in text
    fig = series_figure(SERIES, slopes)
    assert [ax.get_title() for ax in fig.axes] == ["0.040 ms per GiB", "0.300 ms per domain"]


def test_the_xxl_targets_are_ratios_of_the_same_run():
    xxl = sized("XXL", 1024, 1024, 99.0, stream_bytes=5 << 20, frametable_bytes=4 << 30,
                private_peak_kib=1 << 20)
    checks = {t: (m, ok) for t, m, ok in verdicts([sized("floor", 4, 1, 20.0), xxl], {}, None)}
    assert checks["host XXL <= 5 x floor"] == ("4.95 x (99.0 ms)", True)
    assert checks["host XXL stream <= 4 MiB"] == ("5.00 MiB", False)
    assert checks["host XXL private memory peak <= 0.25 x its frame table"] == ("0.250 x (1024 MiB / 4096 MiB)", True)


def test_profile_save_takes_a_small_host_to_the_exec_and_back():
    """`python -m bench.profile_save` (README: xen#1's phases in one
    process) loads a real image the way kexec-lu does, NULL-buffer rules
    included, runs the update to the stubbed exec and resumes."""
    res = subprocess.run([sys.executable, "-m", "bench.profile_save", "--ram-gib", "1", "--domains", "3",
                          "--runs", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("host: 1 GiB, 3 domains,")
    phases = {line.split()[0] for line in res.stdout.splitlines() if line.startswith("  ")}
    assert {"preflight", "quiesce", "save", "handover", "resume"} <= phases
