"""Live-update benchmarks: blackout and where it goes, how it grows, and
what it replaces.

For each host size: boot a simulated host, fill about 3/4 of its RAM with a
mix of PV, PVH and HVM guests (2 vCPUs each, workloads running), then
live-update back and forth several times and keep the median.  The floor is
the same measurement on a host with dom0 only (the cost of starting a new
hypervisor at all), and a bare interpreter start is the floor's own floor.
Two series grow one factor each, the other fixed: host RAM under L's 64
guests (L, L-256G, L-1T) and domains at 64 GiB (L-16d, L, L-256d, L-1024d),
and give two slopes, ms per GiB and ms per domain.  Alongside: the
migration-style baseline on host S, the C core against this machine's
memory bandwidth (and its Python reference, as a report), and the
hypervisor's private memory during the updates.  Targets are ratios within
this one run.  Writes bench/results/latest.{md,json} and, with matplotlib
installed, latest.png (blackout by phase) and latest-series.png (blackout
against RAM and against domains).

    python -m bench [--hosts floor,S,L,...] [--runs N]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from hyperv_sim.bootloader import boot, running_pid, shutdown
from hyperv_sim.mkimage import write_image
from kexec_lu.hypercall import XenClient
from kexec_lu.liveupdate import run_live_update
from xen_public.privcmd import SocketPrivcmd

from . import baseline
from .hosts import ALL_HOSTS, DOMAIN_SERIES, HOSTS, RAM_SERIES, cmdline_for, guests_for
from .soak import private_kib

GiB, MiB = 1 << 30, 1 << 20
PAGE = 4096
# The targets, checked in the report: ratios within one run, and slopes.
TARGETS = {"idle_cpu_pct": 10, "floor_x_bare": 2, "x_floor": {"L": 1.5, "XL": 2.5, "XXL": 5},
           "ms_per_gib": 0.05, "ms_per_domain": 0.25, "bandwidth": 0.5, "baseline_ratio": 50,
           "XXL_rss_x_frametable": 0.25, "XXL_stream": 4 * MiB}
HERE = os.path.dirname(os.path.abspath(__file__))


class PrivateMemorySampler(threading.Thread):
    """The hypervisor's peak private (anonymous) memory, sampled every
    5 ms: the RAM file it maps, frame table included, is not private."""

    def __init__(self, state):
        super().__init__(daemon=True)
        self.state, self.peak_kib, self.stop = state, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            pid = running_pid(self.state)
            try:
                self.peak_kib = max(self.peak_kib, private_kib(pid)) if pid else self.peak_kib
            except (OSError, KeyError):
                pass                # between the exec's two programs
            self.stop.wait(0.005)


def running_hosts():
    """[(pid, state directory)] of every simulated hypervisor running on
    this machine, anyone's: their guests take CPU from what is measured."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "hyperv_sim.xen" in argv and "-m" in argv:
            state = argv[argv.index("--state-dir") + 1] if "--state-dir" in argv[:-1] else "?"
            out.append((int(entry), state))
    return sorted(out)


def max_gaps(ts):
    return [v["max_gap_ns"] for d in ts.toolstack("details")["domains"] for v in d["vcpu_states"]]


def run_host(name, images, runs, workdir, with_baseline):
    ram, domains = HOSTS[name]
    state = os.path.join(workdir, name)
    t0 = time.monotonic()
    disk = None
    boot(images["a"], state, ram, cmdline_for(name))
    ts = SocketPrivcmd(state)
    sampler = PrivateMemorySampler(state)
    try:
        for cfg in guests_for(name):
            ts.toolstack("create", **cfg)
        setup_s = time.monotonic() - t0
        time.sleep(0.5)
        info = ts.toolstack("info")
        guest_frames = sum(d["memory"] for d in ts.toolstack("list") if d["domid"]) // PAGE
        client = XenClient(ts)
        steady_gap = max(max_gaps(ts))
        sampler.start()
        reports = []
        for i in range(runs):
            image = images["b" if i % 2 == 0 else "a"]
            subprocess.run([sys.executable, "-m", "kexec_lu", "load", "--type", "liveupdate",
                            "--reuse-cmdline", image], check=True, capture_output=True,
                           env=dict(os.environ, HYPERV_SIM_DIR=state))
            rep = run_live_update(client, timeout=300)
            if rep["state"] != "complete":
                raise SystemExit("%s: update %d %s: %s" % (name, i, rep["state"], rep.get("error")))
            reports.append(rep)
            time.sleep(0.2)
        sampler.stop.set()
        sampler.join()
        gaps = max_gaps(ts)
        details = ts.toolstack("details")["domains"]
        extents = sum(len(d["p2m"]) + len(d["shared_frames"]) for d in details)
        verify = ts.toolstack("verify")
        if not verify["ok"]:
            raise SystemExit("%s: verify failed after the updates: %s" % (name, verify["problems"][:3]))
        disk = ts.toolstack("info")["ram_disk_usage"]
        base = None
        if with_baseline:
            base = baseline.measure(state, ts)
            verify = ts.toolstack("verify")
            if not verify["ok"]:
                raise SystemExit("%s: verify failed after the baseline: %s" % (name, verify["problems"][:3]))
    finally:
        sampler.stop.set()
        shutdown(state)
    phases = {}
    for rep in reports:
        for p in rep["phases"]:
            phases.setdefault(p["name"], []).append(p["ms"])
    between = [unclaimed_ms(r) for r in reports]
    return {
        "host": name, "ram": ram, "domains": domains, "guest_frames": guest_frames, "runs": runs,
        "setup_s": round(setup_s, 2), "wall_s": round(time.monotonic() - t0, 1), "ram_disk_bytes": disk,
        "blackout_ms": statistics.median(r["blackout_ms"] for r in reports),
        "blackout_ms_all": [round(r["blackout_ms"], 2) for r in reports],
        # The workloads' own view: the longest wait between two steps of any
        # vCPU, before the updates (scheduling alone) and after them.
        "guest_steady_max_gap_ms": steady_gap / 1e6,
        "guest_max_gap_ms": max(gaps) / 1e6 if gaps else None,
        "stream_bytes": statistics.median(r["stream_bytes"] for r in reports),
        "stream_extents": extents,
        "frametable_bytes": info["frametable"]["size"],
        "private_peak_kib": sampler.peak_kib,
        "phases_ms": {k: round(statistics.median(v), 2) for k, v in phases.items()},
        "between_phases_ms": round(statistics.median(between), 2),
        "devices": device_summary(reports),
        "baseline": base,
    }


def device_summary(reports):
    """Per passthrough device, over the runs: its rounds of DMA in the
    blackout (median and least), its longest stall and the packets it
    dropped for a full ring (median and most)."""
    per = {}
    for rep in reports:
        for d in rep.get("devices", []):
            per.setdefault(d["bdf"], []).append(d)
    return [{"bdf": bdf,
             "dma_ops_in_blackout_median": statistics.median(d["dma_ops_in_blackout"] for d in runs),
             "dma_ops_in_blackout_min": min(d["dma_ops_in_blackout"] for d in runs),
             "max_dma_stall_ms": max(d["max_dma_stall_ms"] for d in runs),
             "dropped_median": statistics.median(d["dropped"] for d in runs),
             "dropped_max": max(d["dropped"] for d in runs)}
            for bdf, runs in sorted(per.items())]


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


SLOPE_UNITS = {"ms_per_gib": "ms per GiB", "ms_per_domain": "ms per domain"}


def series_slopes(results):
    """The two slopes, each over a series that grows one factor with the
    other fixed: ms per GiB of host RAM (L's 64 guests), ms per domain
    (64 GiB).  A series needs two of its hosts in the run."""
    by = {r["host"]: r for r in results}
    out = {}
    for key, hosts, x, unit in (("ram", RAM_SERIES, lambda r: r["ram"] / GiB, "ms_per_gib"),
                                ("domains", DOMAIN_SERIES, lambda r: r["domains"], "ms_per_domain")):
        got = [by[h] for h in hosts if h in by]
        if len(got) >= 2:
            out[key] = {"hosts": [r["host"] for r in got], unit: slope([x(r) for r in got],
                                                                        [r["blackout_ms"] for r in got])}
    return out


def baseline_estimate(base, host):
    """The migration-style blackout for another host, from host S's copy
    rate: copying its guest memory twice does not fit in this machine."""
    return base["blackout_ms"] * host["guest_frames"] / base["pages"]


def bare_interpreter_ms(runs):
    """The floor's own floor: the median wall time of `python -I -c pass`
    from this venv, as many runs as the hosts get, in this same run."""
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
        times.append((time.monotonic() - t0) * 1e3)
    return statistics.median(times)


def verdicts(results, slopes, core, bare_ms=None):
    """[(target, measured, met)] for every target this run can judge."""
    by = {r["host"]: r for r in results}
    slopes = slopes or {}
    out = []
    floor = by.get("floor", {}).get("blackout_ms")
    if floor and bare_ms:
        out.append(("floor <= %d x a bare interpreter start (%.1f ms)" % (TARGETS["floor_x_bare"], bare_ms),
                    "%.2f x" % (floor / bare_ms), floor / bare_ms <= TARGETS["floor_x_bare"]))
    for host, most in TARGETS["x_floor"].items():
        if host in by and floor:
            ratio = by[host]["blackout_ms"] / floor
            out.append(("host %s <= %g x floor" % (host, most), "%.2f x (%.1f ms)" % (ratio, by[host]["blackout_ms"]),
                        ratio <= most))
    if "ram" in slopes:
        v = slopes["ram"]["ms_per_gib"]
        out.append(("<= %g ms per GiB of host RAM (%s, L's 64 guests)" % (TARGETS["ms_per_gib"],
                                                                     ", ".join(slopes["ram"]["hosts"])),
                    "%.3f ms" % v, v <= TARGETS["ms_per_gib"]))
    if "domains" in slopes:
        v = slopes["domains"]["ms_per_domain"]
        out.append(("<= %g ms per domain (%s, 64 GiB)" % (TARGETS["ms_per_domain"],
                                                        ", ".join(slopes["domains"]["hosts"])),
                    "%.3f ms" % v, v <= TARGETS["ms_per_domain"]))
    if "XXL" in by:
        xxl = by["XXL"]
        out.append(("host XXL stream <= 4 MiB", "%.2f MiB" % (xxl["stream_bytes"] / MiB),
                    xxl["stream_bytes"] <= TARGETS["XXL_stream"]))
        if xxl["frametable_bytes"]:
            ratio = xxl["private_peak_kib"] * 1024 / xxl["frametable_bytes"]
            out.append(("host XXL private memory peak <= %g x its frame table" % TARGETS["XXL_rss_x_frametable"],
                        "%.3f x (%d MiB / %d MiB)" % (ratio, xxl["private_peak_kib"] >> 10,
                                                      xxl["frametable_bytes"] >> 20),
                        ratio <= TARGETS["XXL_rss_x_frametable"]))
    for row in (core or {}).get("ops", []):
        if row.get("target"):
            out.append(("C core >= %.0f %% of memory bandwidth: %s" % (100 * TARGETS["bandwidth"], row["op"]),
                        "%.0f %% (%.1f GB/s %s)" % (100 * row["bw_fraction"], row["gb_per_s"], row["moves"]),
                        row["bw_fraction"] >= TARGETS["bandwidth"]))
    base = by.get("S", {}).get("baseline")
    if base:
        ratio = base["blackout_ms"] / by["S"]["blackout_ms"]
        out.append(("host S: >= 50 x less blackout than migration-style", "%.0f x" % ratio,
                    ratio >= TARGETS["baseline_ratio"]))
        if "L" in by:
            est = baseline_estimate(base, by["L"])
            out.append(("host L: ratio to migration-style (reported)", "%.0f x (estimated: %.1f s)"
                        % (est / by["L"]["blackout_ms"], est / 1e3), True))
    return out


# Phases a report times that lie outside the blackout.
OUTSIDE_BLACKOUT = ("preflight", "frametable-deferred", "scrub")


def unclaimed_ms(rep):
    """The part of one update's blackout that no phase covers: the gaps
    between one phase's end and the next one's start.  The blackout ends
    when the guests run again (the end of the last phase inside it) and
    began blackout_ms before; the quiesce before the first pause is not in it."""
    inside = [(p["start_ns"], p["end_ns"]) for p in rep["phases"]
              if p["name"] not in OUTSIDE_BLACKOUT and p["end_ns"] is not None]
    end = max(b for _, b in inside)
    start = end - rep["blackout_ms"] * 1e6
    covered, reach = 0.0, start
    for a, b in sorted(inside):
        a, b = max(a, reach), min(b, end)
        if b > a:
            covered += b - a
            reach = b
    return rep["blackout_ms"] - covered / 1e6


def markdown(results, machine, slopes, core, checks):
    slopes = slopes or {}
    lines = ["# Live-update benchmark", "", "Machine: %s" % machine, "",
             "| host | RAM | domains | guest frames | blackout (median ms) | x floor | guest-seen max gap, "
             "steady / after (ms) | stream bytes | bytes per extent | private peak (MiB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    floor = next((r["blackout_ms"] for r in results if r["host"] == "floor"), None)
    for r in results:
        ratio = "%.2f" % (r["blackout_ms"] / floor) if floor else "-"
        per_extent = "%.1f" % (r["stream_bytes"] / r["stream_extents"]) if r.get("stream_extents") else "-"
        lines.append("| %s | %d GiB | %d | %d | %.1f | %s | %.1f / %.1f | %d | %s | %d |" % (
            r["host"], r["ram"] // GiB, r["domains"], r["guest_frames"], r["blackout_ms"], ratio,
            r["guest_steady_max_gap_ms"], r["guest_max_gap_ms"] or 0, r["stream_bytes"], per_extent,
            r["private_peak_kib"] >> 10))
    names = sorted({k for r in results for k in r["phases_ms"]},
                   key=lambda k: min(i for r in results for i, p in enumerate(r["phases_ms"]) if p == k))
    lines += ["", "Phases (median ms; %s are outside the blackout; quiesce is partly):"
              % (", ".join(OUTSIDE_BLACKOUT[:-1]) + " and " + OUTSIDE_BLACKOUT[-1]), "",
              "| host | " + " | ".join(names) + " | sum | between phases | blackout |",
              "|---|" + "---|" * (len(names) + 3)]
    for r in results:
        inside = sum(v for k, v in r["phases_ms"].items() if k not in OUTSIDE_BLACKOUT)
        lines.append("| %s | %s | %.1f | %.1f | %.1f |" % (
            r["host"], " | ".join("%.1f" % r["phases_ms"].get(n, 0) for n in names), inside,
            r.get("between_phases_ms", 0.0), r["blackout_ms"]))
    lines += ["", "Why the phases need not add up to the blackout: each phase column is that phase's "
              "own median over the runs (a sum of medians is not the median of the sums); the quiesce "
              "phase starts before the first vCPU is paused, which is when the blackout starts; and "
              "`between phases` (the median, per run, of the blackout no phase covers: gaps between "
              "one phase's end and the next one's start) belongs to no phase."]
    for key, title, unit, fixed in (("ram", "RAM series", "ms_per_gib", "L's 64 guests"),
                                    ("domains", "Domain series", "ms_per_domain", "64 GiB")):
        if key in slopes:
            series = [next(r for r in results if r["host"] == h) for h in slopes[key]["hosts"]]
            lines += ["", "%s (%s): %.3f %s." % (title, fixed, slopes[key][unit], SLOPE_UNITS[unit]), "",
                      "| host | RAM | domains | blackout (median ms) | biggest phases (ms) |", "|---|---|---|---|---|"]
            lines += ["| %s | %s | %d | %.1f | %s |" % (r["host"], ram_text(r["ram"]), r["domains"], r["blackout_ms"],
                                                      biggest_phases(r)) for r in series]
    took = [r for r in results if "wall_s" in r]
    if took:
        lines += ["", "What each host took: %s." % "; ".join(
            "%s %.0f s (guests created in %.0f s), %s of RAM file on disk" % (
                r["host"], r["wall_s"], r["setup_s"], ram_text(r["ram_disk_bytes"])) for r in took)]
    for r in results:
        if r.get("devices"):
            lines += ["", "Passthrough NICs on host %s, through the blackout (docs/iommu.md):" % r["host"], "",
                      "| device | rounds of DMA (median / least) | longest stall (ms) | "
                      "packets dropped for a full ring (median / most) |", "|---|---|---|---|"]
            lines += ["| %s | %g / %d | %.2f | %g / %d |" % (
                d["bdf"], d["dma_ops_in_blackout_median"], d["dma_ops_in_blackout_min"], d["max_dma_stall_ms"],
                d["dropped_median"], d["dropped_max"]) for d in r["devices"]]
    for r in results:
        if r.get("baseline"):
            b = r["baseline"]
            lines += ["", "Migration-style baseline on host %s: every guest page copied into a stream and "
                      "back, domains paused: %.0f ms for %d MiB (%.0f MiB/s; %.0f ms on the first, "
                      "cold pass), %.0f x the live update's blackout." % (
                          r["host"], b["blackout_ms"], b["bytes"] >> 20,
                          b["bytes"] / MiB / (b["blackout_ms"] / 1e3), b["cold_ms"],
                          b["blackout_ms"] / r["blackout_ms"])]
    if core:
        from . import core as core_bench
        lines += ["", core_bench.markdown(core).strip()]
    if checks:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += ["| %s | %s | %s |" % (t, m, "yes" if ok else "**no**") for t, m, ok in checks]
    return "\n".join(lines) + "\n"


def ram_text(n):
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB)):
        if n >= size:
            return "%g %s" % (round(n / size, 1), unit)
    return "%d B" % n


def biggest_phases(r, n=3):
    inside = sorted(((v, k) for k, v in r["phases_ms"].items() if k not in OUTSIDE_BLACKOUT), reverse=True)
    return ", ".join("%s %.1f" % (k, v) for v, k in inside[:n])


def plot(results, slopes, out):
    """latest.png: blackout by phase per host; latest-series.png: blackout
    against RAM and against domains, if matplotlib is there.  -> the
    paths written."""
    try:
        figs = [("latest.png", figure(results))]
        if slopes:
            figs.append(("latest-series.png", series_figure(results, slopes)))
    except ImportError:
        return []
    for name, fig in figs:
        fig.savefig(os.path.join(out, name), dpi=100, bbox_inches="tight")
    return [os.path.join(out, name) for name, _ in figs]


def series_figure(results, slopes):
    """Blackout against host RAM (L's 64 guests) and against domains (64 GiB),
    each series with its fitted slope."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by = {r["host"]: r for r in results}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, unit, x, xlabel in ((axes[0], "ram", "ms_per_gib", lambda r: r["ram"] / GiB, "host RAM (GiB), L's 64 guests"),
                                     (axes[1], "domains", "ms_per_domain", lambda r: r["domains"],
                                      "domains, 64 GiB host")):
        if key not in slopes:
            ax.set_visible(False)
            continue
        pts = [by[h] for h in slopes[key]["hosts"]]
        xs, ys = [x(r) for r in pts], [r["blackout_ms"] for r in pts]
        ax.plot(xs, ys, "o-", label="blackout (median)")
        for r, px, py in zip(pts, xs, ys):
            ax.annotate(r["host"], (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms")
        ax.set_ylim(bottom=0)
        ax.set_title("%.3f %s" % (slopes[key][unit], SLOPE_UNITS[unit]))
    fig.tight_layout()
    return fig


def figure(results):
    """The plot: stacked phases per host, the blackout's median as a tick,
    the legend beside the axes, where no bar can be under it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = [("quiesce", ["quiesce"]), ("save", ["save"]), ("hand-over", ["handover"]),
              ("exec + start-up", ["exec", "start-up"]), ("validate", ["map-stream", "validate"]),
              ("restore", ["frametable", "restore-pass0", "restore-pass1", "restore-pass2"]),
              ("release + unpause", ["release-stream", "unpause"])]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    bottoms = [0.0] * len(results)
    for label, keys in groups:
        vals = [sum(r["phases_ms"].get(k, 0) for k in keys) for r in results]
        ax.bar([r["host"] for r in results], vals, bottom=bottoms, label=label)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.plot([r["host"] for r in results], [r["blackout_ms"] for r in results], "k_", markersize=30,
            label="blackout (median)")
    ax.set_ylabel("ms")
    ax.set_title("Live-update blackout by phase")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--hosts", default=",".join(ALL_HOSTS), help="comma-separated: %s" % ",".join(HOSTS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-core", action="store_true", help="skip the C-against-Python comparison")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--allow-others", action="store_true",
                    help="measure even while other simulated hosts run (marked in the report)")
    args = ap.parse_args(argv)
    others = running_hosts()
    if others and not args.allow_others:
        sys.exit("bench: %d simulated host(s) already running on this machine (%s): their guests take "
                 "CPU and the numbers would be noise; shut them down (HYPERV_SIM_DIR=DIR hyperv-sim "
                 "shutdown), or pass --allow-others to measure anyway"
                 % (len(others), ", ".join("pid %d in %s" % o for o in others)))
    names = args.hosts.split(",")
    for n in names:
        if n not in HOSTS:
            ap.error("unknown host %r" % n)
    with tempfile.TemporaryDirectory(prefix="kexec-lu-bench-") as work:
        images = {"a": os.path.join(work, "xen-a.gz"), "b": os.path.join(work, "xen-b.gz")}
        write_image(images["a"], xen_version="4.18")
        write_image(images["b"], xen_version="4.19")
        print("bench: a bare interpreter start ...", flush=True)
        bare_ms = bare_interpreter_ms(args.runs)
        print("bench: an idle host (dom0 alone, defaults) ...", flush=True)
        from . import idle as idle_bench
        idle = idle_bench.run(images["a"], work)
        results = []
        for n in names:
            print("bench: host %s ..." % n, flush=True)
            results.append(run_host(n, images, args.runs, work, with_baseline=(n == "S")))
    core = None
    if not args.no_core:
        print("bench: C core against the Python reference ...", flush=True)
        from . import core as core_bench
        core = core_bench.run()
    machine = "%s, %d CPUs, %s, Python %s" % (platform.machine(), os.cpu_count(), _cpu_model(),
                                              platform.python_version())
    if others:
        machine += " (NOT IDLE: %d other simulated host(s) ran beside the benchmark)" % len(others)
    slopes = series_slopes(results)
    checks = [("idle host (dom0 alone, defaults) <= 10 % of one CPU", "%.1f %% (dom0 %.0f steps/s)"
               % (idle["cpu_pct"], idle["dom0_steps_per_s"]), idle["cpu_pct"] <= TARGETS["idle_cpu_pct"])]
    checks += verdicts(results, slopes, core, bare_ms)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"machine": machine, "bare_interpreter_ms": bare_ms, "idle": idle, "results": results,
                   "slopes": slopes, "core": core,
                   "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks]},
                  f, indent=2)
    md = markdown(results, machine, slopes, core, checks)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    plots = plot(results, slopes, args.out)
    if plots:
        print("bench: plots in %s" % ", ".join(plots))
    else:
        print("bench: no plot (install matplotlib, or `pip install -e .[bench]`)")
    print(md)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
