"""Runs many `vaekit` command lines in one process under a memory limit (address space, `resource.setrlimit`).

Reads a JSON list of {"argv": [...], "cwd": "...", "env": {...}} on stdin; writes a JSON list of {"status",
"stderr", "seconds", "peak_mb"} (the process's peak resident memory up to and including that case). Used
through conftest.run_many: hundreds of cases in one interpreter instead of one each.
"""

import contextlib
import io
import json
import os
import resource
import sys
import time

limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

from vaekit.cli import main  # noqa: E402  (imported under the limit)


def peak_mb() -> float:
    """This process's peak resident memory so far (VmHWM: unlike ru_maxrss, not inherited from the parent
    that forked us, which may be a large pytest process)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


results = []
for case in json.load(sys.stdin):
    os.chdir(case["cwd"])
    os.environ.update(case.get("env", {}))
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(case["argv"])
        except SystemExit as e:  # argparse's --help/--version only; errors come back as statuses
            status = e.code
    results.append({"status": status, "stderr": err.getvalue(), "seconds": time.perf_counter() - started,
                    "peak_mb": peak_mb()})
json.dump(results, sys.stdout)
