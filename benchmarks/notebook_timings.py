"""Measure what each notebook costs: wall time, CPU time and peak memory, in quick mode and at full size.

    python benchmarks/notebook_timings.py --mode quick 01 02 03      # quick mode (LVDM_QUICK=1)
    python benchmarks/notebook_timings.py --mode full 01 03           # full size (the default settings)

Each notebook runs top to bottom in a fresh kernel (nbclient), one at a time, with one thread
(OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE), from the notebooks folder. Wall time is the execution of all
cells (the kernel's start excluded); CPU time and peak memory are the kernel's own and its children's
(DataLoader workers), read by a cell appended at the end (`resource.getrusage`). The machine's load
average before and after each run is recorded with it: on a shared machine the wall time depends on it,
the CPU time much less. Results are merged into notebooks/timings.json (`--out`), one entry per notebook
and mode; the notebooks' time boxes quote them (tests/test_notebooks.py keeps the two in step).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
MARKER = "LVDM_NOTEBOOK_USAGE "
USAGE_CELL = f"""import json, resource
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print({MARKER!r} + json.dumps({{"cpu_seconds": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
                               "peak_rss_mib": max(own.ru_maxrss, children.ru_maxrss) / 1024}}))"""


def measure(path: Path, mode: str, timeout: int = 3600, keep: Path | None = None) -> dict:
    """Run one notebook in a fresh kernel; its wall and CPU seconds, peak RSS and the load around it."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(USAGE_CELL))
    os.environ.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", LVDM_QUICK="1" if mode == "quick" else "0")
    load_before = os.getloadavg()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    began = time.perf_counter()
    with client.setup_kernel():
        started = time.perf_counter()
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)
        wall = time.perf_counter() - started
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, keep / f"{path.stem}.{mode}.ipynb")
    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs)
    usage = json.loads(printed.split(MARKER, 1)[1])
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(usage["cpu_seconds"], 1),
            "peak_rss_mib": round(usage["peak_rss_mib"]), "kernel_start_seconds": round(started - began, 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "threads": 1, "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", help="notebook numbers (01) or names (01_data)")
    parser.add_argument("--mode", choices=("quick", "full"), required=True)
    parser.add_argument("--out", type=Path, default=NOTEBOOKS / "timings.json")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the executed notebooks")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    record: dict = {}
    for name in args.notebooks:
        path = next(NOTEBOOKS.glob(f"{name}*.ipynb"))
        print(f"{path.stem} ({args.mode}) ...", file=sys.stderr, flush=True)
        try:
            result = measure(path, args.mode, args.timeout, args.keep)
        except Exception as error:  # a failing notebook is reported and not recorded; the others still run
            print(f"{path.stem} ({args.mode}) FAILED: {str(error)[-3000:]}", file=sys.stderr, flush=True)
            continue
        print(f"{path.stem} ({args.mode}): {json.dumps(result)}", file=sys.stderr, flush=True)
        record = json.loads(args.out.read_text()) if args.out.exists() else {}  # merge with earlier runs
        record["machine"] = f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}, shared with other jobs"
        record["how"] = "python benchmarks/notebook_timings.py --mode {quick,full} NN ... (one thread, one at a time)"
        record.setdefault("notebooks", {}).setdefault(path.stem, {})[args.mode] = result
        args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


if __name__ == "__main__":
    main()
