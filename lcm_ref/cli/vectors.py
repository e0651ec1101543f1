"""``lcm-ref vectors generate|check``: the golden vectors from the shell."""

from __future__ import annotations

import torch

from ..errors import LCMRefError
from ..oracle.vectors import DEFAULT_OUT, VectorFileError, check_vectors, write


def configure_parser(parser):
    parser.description = ("Golden vectors: language-neutral JSON test cases (timesteps, tables, steps, forward "
                          "process) for any port of LCMScheduler, with a JSON Schema. A copy ships with lcm_ref; "
                          "the format is described in docs/design.md §10.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="write the vector files and their schema, computed by the reference",
                       description="Write timesteps.json, tables.json, steps.json, forward.json and their schema, "
                                   "computed by the float64 reference. The result is byte-identical to the copy "
                                   "shipped with this version of lcm_ref.")
    g.add_argument("--out", metavar="DIR", default=str(DEFAULT_OUT),
                   help=f"folder to write into (default: ./{DEFAULT_OUT} in the current directory)")
    c = sub.add_parser("check", help="check a scheduler (or the reference itself) against the vector files",
                       description="Without --impl: re-derive every case from the reference, bit for bit. With "
                                   "--impl: run your scheduler on every case; integers must match exactly, floats "
                                   "within the error budget for --dtype.")
    c.add_argument("--impl", metavar="MODULE:ATTR", default=None,
                   help="your scheduler class (or factory) with diffusers' LCMScheduler interface, e.g. "
                        "my_pkg.sched:MyLCM")
    c.add_argument("--dir", metavar="DIR", default=None,
                   help="folder of the vector files (default: the copy shipped with lcm_ref)")
    c.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="dtype your scheduler computes in (inputs are float32-exact); default float64")
    c.add_argument("--quirks", action="store_true",
                   help="also check the cases flagged Quirk*, where diffusers mishandles the input (skipped by "
                        "default)")
    c.add_argument("--profile", default="diffusers", choices=["diffusers", "strict"],
                   help="which behaviour your scheduler follows on timesteps requests diffusers mishandles: "
                        "'diffusers' (reproduce it) or 'strict' (raise ValueError); default diffusers")


def main(args) -> int:
    if args.action == "generate":
        for p in write(args.out):
            print(p)
        return 0
    try:
        res = check_vectors(args.impl, args.dir, dtype=getattr(torch, args.dtype), quirks=args.quirks,
                            profile=args.profile)
    except (VectorFileError, LCMRefError) as e:
        print(f"lcm-ref vectors check: {e}")
        return 2
    who = args.impl or "lcm_ref.reference (bit for bit)"
    for f in res["failures"]:
        print(f"FAIL {f}")
    print(f"{who}: {res['checked']} cases checked, {res['skipped']} skipped, {len(res['failures'])} failed")
    return 1 if res["failures"] else 0
