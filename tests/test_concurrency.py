"""Many clients at once: loads, unloads and status questions from parallel
processes leave the hypervisor consistent (one image or none, staged in
exactly its frames, every answer well-formed)."""
import concurrent.futures

from xen_public import abi


def test_parallel_loads_unloads_and_status_stay_consistent(host, sim_images):
    images = [str(sim_images["4.18"]), str(sim_images["4.19"])]
    jobs = []
    for i in range(24):
        if i % 3 == 0:
            jobs.append(("load", "--type", "liveupdate", images[i % 2]))
        elif i % 3 == 1:
            jobs.append(("status", "--type", "liveupdate"))
        else:
            jobs.append(("unload", "--type", "liveupdate"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda args: host.kexec_lu(*args), jobs))
    for args, res in zip(jobs, results):
        if args[0] == "status":
            assert res.returncode in (0, 1), res           # loaded or not, never an error
        else:
            assert res.returncode == 0, (args, res)
    # Whatever order they ran in, the end state is one of the legal ones.
    loaded = host.client.kexec_status(abi.KEXEC_TYPE_LIVEUPDATE)
    image = host.toolstack("info")["kexec"]["liveupdate"]
    assert bool(loaded) == (image is not None)
    frames = host.toolstack("info")["frames"]
    staged = frames.get("kexec-image", 0)
    assert staged == (769 if loaded else 0)           # 3 MiB image + its boot-information page
    assert host.toolstack("verify")["ok"]
