"""Run a libFuzzer target (a clang-built binary, or an atheris script) for a
time budget and say what happened: inputs tried, crashes found, wall time.

libFuzzer stops at the first crash, timeout or out-of-memory input and
writes it to an artifact file.  Here a run that stops early is counted and
restarted for the rest of the budget, without the input that stopped it, so
one bug does not hide the next.  Everything libFuzzer prints goes to
WORKDIR/fuzz.log; a progress line goes to stdout every PROGRESS_EVERY s.
"""
import hashlib
import os
import re
import subprocess
import sys
import time

ARTIFACT_KINDS = ("crash", "leak", "timeout", "oom", "slow-unit")
PROGRESS_EVERY = 60
MAX_RESTARTS = 20

_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"^Done (\d+) runs in")
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s.*?cov: (\d+) ft: (\d+) corp: (\d+)/")


def _sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def _drop_input(digest, dirs):
    """Remove corpus or seed files with this content, so a restart does not
    stop on the same input again.  Returns how many went."""
    gone = 0
    for d in dirs:
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isfile(p) and _sha1(p) == digest:
                os.unlink(p)
                gone += 1
    return gone


def _artifacts(d):
    """{name: mtime} of the artifacts in d: a crash found again rewrites its file."""
    return {n: os.stat(os.path.join(d, n)).st_mtime_ns for n in os.listdir(d)
            if n.startswith(ARTIFACT_KINDS)}


def run(cmd, corpus, seeds, seconds, workdir, options=(), label="fuzz"):
    """Fuzz for `seconds` of wall time in total.  cmd: the target and any
    arguments before libFuzzer's; corpus: the directory libFuzzer adds
    inputs to; seeds: a read-only seed directory.  Returns a dict."""
    artifacts = os.path.join(workdir, "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    os.makedirs(corpus, exist_ok=True)
    findings = []
    start = time.monotonic()
    runs = restarts = 0
    status = {}
    log_path = os.path.join(workdir, "fuzz.log")
    with open(log_path, "w") as log:
        while True:
            left = int(seconds - (time.monotonic() - start))
            if left < 1:
                break
            args = list(cmd) + ["-max_total_time=%d" % left, "-print_final_stats=1",
                                "-artifact_prefix=" + artifacts + os.sep] + list(options) \
                + [corpus, seeds]
            log.write("$ %s\n" % " ".join(args))
            log.flush()
            before = _artifacts(artifacts)
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
            executed = done = last = None
            next_progress = time.monotonic() + PROGRESS_EVERY
            for line in proc.stdout:
                log.write(line)
                m = _STATUS.match(line)
                if m:
                    last = int(m.group(1))
                    status = {"cov": int(m.group(3)), "ft": int(m.group(4)),
                              "corpus": int(m.group(5))}
                m = _EXECUTED.search(line)
                if m:
                    executed = int(m.group(1))
                m = _DONE.match(line)
                if m:
                    done = int(m.group(1))
                if last is not None and time.monotonic() >= next_progress:
                    print("%s: %d s, %d inputs so far, cov %s, corpus %s"
                          % (label, time.monotonic() - start, runs + last,
                             status.get("cov"), status.get("corpus")), flush=True)
                    next_progress += PROGRESS_EVERY
            rc = proc.wait()
            runs += next(v for v in (executed, done, last, 0) if v is not None)
            after = _artifacts(artifacts)
            new = sorted(n for n in after if before.get(n) != after[n])
            if rc == 0:
                break
            if not new:
                sys.stderr.write("%s: the fuzzer exited with status %d and no finding; "
                                 "see %s\n" % (label, rc, log_path))
                raise SystemExit(2)
            for name in new:
                if os.path.join(artifacts, name) not in findings:
                    findings.append(os.path.join(artifacts, name))
                _drop_input(_sha1(os.path.join(artifacts, name)), (corpus, seeds))
                print("%s: FINDING %s" % (label, os.path.join(artifacts, name)), flush=True)
            restarts += 1
            if restarts > MAX_RESTARTS:
                print("%s: stopping after %d restarts" % (label, MAX_RESTARTS), flush=True)
                break
    return {"runs": runs, "seconds": time.monotonic() - start, "findings": findings,
            "restarts": restarts, "log": log_path, **status}


def summary(label, r):
    """The line `make fuzz` prints per fuzzer."""
    return ("%s: %d inputs tried in %.0f s (%.0f/s), %d crashes found, coverage %s, "
            "corpus %s inputs%s" % (label, r["runs"], r["seconds"],
                                    r["runs"] / max(r["seconds"], 1e-9), len(r["findings"]),
                                    r.get("cov", "?"), r.get("corpus", "?"),
                                    "".join("\n  " + f for f in r["findings"])))
