"""``lcm-ref report``: execute the notebooks into a report folder."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from ..errors import LCMRefError
from ..studies.report import CELL_TIMEOUT_S, ORDER, run


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0].split(": ", 1)[1]
    parser.add_argument("--fast", action="store_true", help="smaller sweeps (for tests and a quick look)")
    parser.add_argument("--only", metavar="NAME", action="append",
                        help=f"run only this notebook (repeatable): one of {', '.join(ORDER)}")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: ./reports in the current directory)")
    parser.add_argument("--notebooks", metavar="DIR", help="folder of notebooks to run (default: the notebooks that "
                        "ship with lcm_ref)")
    parser.add_argument("--weights", metavar="DIR", help="evaluate the learned testbed's networks in DIR (e.g. "
                        "paper-train/weights, from lcm-ref paper train) instead of the committed ones")
    parser.add_argument("--runs", metavar="DIR", help="read the training curves from DIR (e.g. paper-train/runs) "
                        "instead of the committed ones")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="per-cell limit in seconds")


def main(args) -> int:
    start = time.perf_counter()
    missing = [m for m in ("nbformat", "nbclient", "ipykernel") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"lcm-ref report: error: executing the notebooks needs {', '.join(missing)}; install them with "
              "pip install 'lcm_ref[notebooks]'", file=sys.stderr)
        return 2
    try:
        results = run(args.out, fast=args.fast, only=args.only, notebooks=args.notebooks, timeout=args.timeout,
                      weights=args.weights, runs=args.runs)
    except LCMRefError as e:
        print(f"lcm-ref report: error: {e}", file=sys.stderr)
        return 2
    for r in results:
        status = f"ok, {r.figures} figures" if r.ok else "FAILED (previous page kept)"
        print(f"{r.name:22s} {r.seconds:7.1f} s  {status}")
    print(f"wrote {Path(args.out or 'reports').resolve()} in {time.perf_counter() - start:.0f} s")
    return 0 if all(r.ok for r in results) else 1
