"""``lcm-ref vectors generate|check``: the golden vectors from the shell."""

from __future__ import annotations

import torch

from ..errors import LCMRefError
from ..oracle.vectors import VECTOR_DIR, VectorFileError, check_vectors, write


def configure_parser(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = sub.add_parser("generate", help="write the vector files and their schema from the reference")
    g.add_argument("--out", default=None, help=f"directory (default: {VECTOR_DIR})")
    c = sub.add_parser("check", help="check the reference (bit for bit) or --impl against the vector files")
    c.add_argument("--impl", default=None, help="module:attr of a scheduler with diffusers' interface")
    c.add_argument("--dir", default=None, help=f"directory of the vector files (default: {VECTOR_DIR})")
    c.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="dtype the implementation computes in (inputs are float32-exact); default float64")
    c.add_argument("--quirks", action="store_true", help="also check the cases flagged Quirk* on --impl")
    c.add_argument("--profile", default="diffusers", choices=["diffusers", "strict"],
                   help="which TimestepsTest profile --impl follows (default diffusers)")


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
