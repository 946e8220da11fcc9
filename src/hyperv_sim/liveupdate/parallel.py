"""Work on several threads inside the blackout: the per-domain steps of a
save or a restore call the C core, which drops the GIL, so domains go
side by side on the host's CPUs.
"""
import threading


def in_parallel(work, items, nr_threads):
    """work(item) for every item, on nr_threads threads (the C core drops
    the GIL); the first exception is raised once all have stopped.  Not
    concurrent.futures: its import (with logging) costs milliseconds of
    blackout."""
    todo, errors = iter(list(items)), []
    lock = threading.Lock()

    def worker():
        while not errors:
            with lock:
                item = next(todo, todo)
            if item is todo:
                return
            try:
                work(item)
            except BaseException as e:      # noqa: B036 - re-raised below
                errors.append(e)
    threads = [threading.Thread(target=worker) for _ in range(max(1, nr_threads) - 1)]
    for t in threads:
        t.start()
    worker()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
