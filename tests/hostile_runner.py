"""Runs many `vaekit` command lines in one process under a memory limit (address space, `resource.setrlimit`).

Reads a JSON list of {"argv": [...], "cwd": "...", "env": {...}} on stdin; writes a JSON list of {"status",
"stderr", "seconds", "peak_mb"} (the process's peak resident memory during that case). Used
through conftest.run_many: hundreds of cases in one interpreter instead of one each.

A case may also set files up before it runs: "reset" [[source, target], ...] replaces each target folder with a copy
of its source, then "write" {path: text} writes each file (the hostile contents of a file vaekit reads back).
"""

import contextlib
import io
import json
import os
import resource
import shutil
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


def set_up(case: dict) -> None:
    for source, target in case.get("reset", []):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)
    for path, text in case.get("write", {}).items():
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def reset_peak() -> None:
    """Start each case's peak afresh (Linux: writing 5 to clear_refs resets VmHWM), so each is its own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


results = []
for case in json.load(sys.stdin):
    set_up(case)
    reset_peak()
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
