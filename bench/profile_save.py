"""xen#1's side of a live update, in-process: where the blackout goes.

Builds a hypervisor inside this process (as tests/helpers.py does) on a
sparse RAM file, fills it like `python -m bench` host L (64 GiB, 64
domains), loads a live-update image, then repeats:

  * the engine's own update (LiveUpdate._run) up to the exec, which is a
    stub that notes the time and fails, so the update aborts and every
    domain resumes: quiesce, save, handover (save end -> exec, as xen#2
    reports it) and the abort's cost;
  * each step on its own, for a finer breakdown: hvm_first, pv_last,
    build_stream, StreamPages, build_mfn_array, write_breadcrumb,
    image_fingerprint (and pre-flight's SHA-256, for comparison),
    place_image (over this process's own RAM: harmless here), release,
    resume.

Prints per-phase medians (wall time, and the update thread's CPU time,
which a busy machine disturbs less) and, with --profile, the top cProfile
entries of the engine runs.  One long-lived process: the first-touch page
faults a freshly exec'd hypervisor takes do not show after the warm-up run;
`python -m bench` measures those.

    python -m bench.profile_save [--ram-gib 64] [--domains 64] [--runs 7] [--profile]
"""
import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time

from hyperv_sim._lu_core import lib
from hyperv_sim.bootloader import power_on
from hyperv_sim.console import Console
from hyperv_sim.hypervisor import Hypervisor
from hyperv_sim.kexec import KexecFailure
from hyperv_sim.liveupdate import handover, save
from hyperv_sim.liveupdate.engine import LiveUpdate
from hyperv_sim.liveupdate.quiesce import Quiesce
from hyperv_sim.mkimage import write_image
from hyperv_sim.ram import HostRAM
from xen_public import abi
from kexec_lu.image import load_image
from kexec_lu.loader import plan_load

from .hosts import CMDLINE, guest_configs

GiB, MiB = 1 << 30, 1 << 20


class Exec(KexecFailure):
    """The stub exec: the update aborts here, after the point of no return
    as far as timing goes (RAM is this process's own, nothing is lost)."""


def build_host(workdir, ram_bytes, domains):
    images = {v: os.path.join(workdir, "xen-%s.gz" % v) for v in ("4.18", "4.19")}
    for v, path in images.items():
        write_image(path, xen_version=v)
    t0 = time.monotonic()
    ram_path, entry, _ = power_on(images["4.18"], os.path.join(workdir, "host"), ram_bytes, CMDLINE)
    hv = Hypervisor(HostRAM.open(ram_path), entry, Console(), nr_pcpus=2)
    for cfg in guest_configs(ram_bytes, domains):
        hv.create_domain(cfg["name"], cfg["type"], cfg["memory"], cfg["vcpus"],
                         evtchn_abi=cfg["event_channel_abi"], grant_version=cfg["grant_version"])
    _load_lu_image(hv, images["4.19"])
    print("host: %d GiB, %d domains, %d vCPUs, built in %.1f s" % (
        ram_bytes // GiB, len(hv.domains), sum(d.vcpus for d in hv.domains.values()),
        time.monotonic() - t0), flush=True)
    return hv


def _load_lu_image(hv, path):
    """What `kexec-lu load --type liveupdate --reuse-cmdline` does, minus privcmd."""
    ranges = {abi.KEXEC_RANGE_MA_LIVEUPDATE: (hv.lu_start, hv.lu_size),
              abi.KEXEC_RANGE_MA_XEN: (hv.xen_start, hv.xen_size)}
    plan = plan_load(load_image(path), abi.KEXEC_TYPE_LIVEUPDATE, ranges,
                     " ".join(w for w in hv.cmdline.split() if not w.startswith("liveupdate=")))
    # Handle 0 is a NULL buffer (a segment only mapped): theirs start at 1.
    segs = [(i, len(data), dest, dest_size) for i, (data, dest, dest_size) in enumerate(plan.segments, 1)]
    hv.kexec.load(abi.KEXEC_TYPE_LIVEUPDATE, plan.arch, plan.entry, segs,
                  lambda handle, n: plan.segments[handle - 1][0][:n])


def engine_run(hv):
    """One real update up to the exec: {phase: ms}."""
    exec_ns = []

    def stub_exec(entry):
        exec_ns.append(lib.lu_now_ns())
        exec_ns.append(time.thread_time_ns())
        raise Exec(abi.EIO, "harness: exec stub")
    hv.exec_into = stub_exec
    lu = LiveUpdate(hv)
    t0 = lib.lu_now_ns()
    lu.preflight()
    t1 = lib.lu_now_ns()
    hv.lu_active, hv.lu_report = True, lu.report
    cpu = time.thread_time_ns()
    lu._run()                        # synchronously, as the thread would
    t2 = lib.lu_now_ns()
    hv.exec_into = None
    if not exec_ns:
        raise SystemExit("update did not reach the exec: %s" % lu.report.error)
    ph = {n: (a, b) for n, a, b in lu.report.phases}
    save_end = ph["save"][1]
    return {"preflight": (t1 - t0) / 1e6,
            "quiesce": (ph["quiesce"][1] - ph["quiesce"][0]) / 1e6,
            "save": (save_end - ph["save"][0]) / 1e6,
            "handover": (exec_ns[0] - save_end) / 1e6,
            "xen#1 total": (exec_ns[0] - ph["quiesce"][0]) / 1e6,
            # What this thread itself spent up to the exec, waits and
            # preemption left out: steadier than wall time on a busy machine.
            "xen#1 cpu": (exec_ns[1] - cpu) / 1e6,
            "abort+resume": (t2 - exec_ns[0]) / 1e6}


def steps_run(hv):
    """The same steps one by one: {step: ms}."""
    out = {}

    def timed(name, fn, *args):
        t = time.perf_counter_ns()
        r = fn(*args)
        out[name] = (time.perf_counter_ns() - t) / 1e6
        return r
    with hv.lock:
        q = timed("Quiesce()", Quiesce, hv)
        timed("hvm_first", q.hvm_first, hv.opts.lu_quiesce_timeout_ms / 1000.0)
        timed("pv_last", q.pv_last)
        data, _ = timed("build_stream", save.build_stream, hv, [("quiesce", 1, 2)], q.paused_before, 1)
        pages = timed("StreamPages", handover.StreamPages, hv, data)
        timed("build_mfn_array", pages.build_mfn_array)
        timed("write_breadcrumb", pages.write_breadcrumb, 0)
        image = hv.kexec.images[abi.KEXEC_TYPE_LIVEUPDATE]
        if hasattr(handover, "image_fingerprint"):
            timed("image_fingerprint", handover.image_fingerprint, hv, image)
        timed("sha256 (preflight)", hv.kexec.image_intact, abi.KEXEC_TYPE_LIVEUPDATE)
        timed("place_image", handover.place_image, hv, image)
        timed("release", pages.release)
        timed("clear_breadcrumb", handover.clear_breadcrumb, hv)
        timed("resume", q.resume)
    out["stream KiB"] = len(data) / 1024
    return out


def medians(rows):
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def show(title, med, rows):
    print(title)
    for k, v in med.items():
        spread = "%.2f-%.2f" % (min(r[k] for r in rows), max(r[k] for r in rows))
        print("  %-18s %9.3f   (%s)" % (k, v, spread))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.profile_save")
    ap.add_argument("--ram-gib", type=int, default=64)
    ap.add_argument("--domains", type=int, default=64)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--profile", action="store_true", help="cProfile the engine runs")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="profile-save-", dir="/tmp") as work:
        hv = build_host(work, args.ram_gib * GiB, args.domains)
        try:
            time.sleep(0.3)              # let the workloads get going
            engine_run(hv)               # warm-up: first touches, imports
            steps_run(hv)
            eng, steps = [], []
            for _ in range(args.runs):
                eng.append(engine_run(hv))
                time.sleep(0.05)
                steps.append(steps_run(hv))
                time.sleep(0.05)
            show("engine, median ms over %d runs (min-max):" % args.runs, medians(eng), eng)
            show("steps, median ms:", medians(steps), steps)
            if args.profile:
                prof = cProfile.Profile()
                for _ in range(args.runs):
                    prof.enable()
                    engine_run(hv)
                    prof.disable()
                    time.sleep(0.05)
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
                print(s.getvalue())
                s = io.StringIO()
                pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(args.top)
                print(s.getvalue())
            problems = hv.verify()
            if not problems.get("ok", True):
                raise SystemExit("verify failed after the runs: %s" % problems.get("problems", [])[:3])
        finally:
            hv.close()


if __name__ == "__main__":
    main()
