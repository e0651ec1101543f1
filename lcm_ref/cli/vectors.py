"""``lcm-ref vectors generate|check|judge``: the golden vectors from the shell."""

from __future__ import annotations

import json

import torch

from ..errors import LCMRefError
from ..numerics import write_atomic
from ..oracle.vectors import DEFAULT_OUT, OUTPUTS_SCHEMA, VectorFileError, check_vectors, judge, write


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
    j = sub.add_parser("judge", help="judge what a port in any language got on the vectors (an outputs JSON file)",
                       description="Judge OUTPUTS.json, what a port in any language got on the vector cases "
                                   f"(format: the JSON Schema {OUTPUTS_SCHEMA} shipped beside the vectors, "
                                   "docs/design.md §10), by the vectors' rules: integers and error categories "
                                   "exactly, floats within the budget of the tier it names. Prints a verdict per "
                                   "case (pass, fail, unsupported, inconclusive) and per concern. Exit status: 0 "
                                   "PASS, 1 FAIL (a concern fails), 2 usage error (a malformed outputs file), "
                                   "3 INCOMPLETE (nothing fails, a concern was not judged: unsupported or missing "
                                   "cases).")
    j.add_argument("outputs", metavar="OUTPUTS.json", help="the port's results")
    j.add_argument("--dir", metavar="DIR", default=None,
                   help="folder of the vector files (default: the copy shipped with lcm_ref)")
    j.add_argument("--all-cases", action="store_true", help="print every case's verdict (default: all but passes)")
    j.add_argument("--json", metavar="FILE", default=None, help="also write the verdicts as JSON")


def main(args) -> int:
    if args.action == "generate":
        for p in write(args.out):
            print(p)
        return 0
    if args.action == "judge":
        try:
            result = judge(args.outputs, args.dir)
        except (VectorFileError, LCMRefError) as e:
            print(f"lcm-ref vectors judge: {e}")
            return 2
        print(result.to_text(all_cases=args.all_cases))
        if args.json:
            write_atomic(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
        return result.exit_code
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
