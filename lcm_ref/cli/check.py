"""``lcm-ref check IMPL``: conform's fail-fast mode (``lcm_ref.oracle.check``) from the shell: the concerns in
order, stopping at the first that fails. The output ends with one line: PASS, FAIL or INCOMPLETE. Exit status as
``lcm-ref conform``: 0 PASS, 1 FAIL, 2 usage error, 3 INCOMPLETE (nothing failed, something could not be judged on
enough examples)."""

from __future__ import annotations

import argparse

from .. import reference as ref
from ..errors import LCMRefError


def configure_parser(parser):
    from ..oracle.conform import CONCERNS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("examples:\n  lcm-ref check diffusers:LCMScheduler\n"
                     "  lcm-ref check my_port:Scheduler --dtype float16\n\n"
                     "IMPL is module:attr, imported from the current directory first. lcm-ref conform judges every "
                     "concern\nwithout stopping; docs/design.md §9 explains them.")
    parser.add_argument("impl", help="the scheduler class or factory, as module:attr (e.g. diffusers:LCMScheduler)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"],
                        help="dtype of the samples and model outputs (default float32)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--examples", type=int, default=None, metavar="N",
                        help="hypothesis examples per concern (default: each concern's own count)")
    parser.add_argument("--tables", default="float32", choices=["float32", "float64"],
                        help="table precision allowed (default float32, as lcm-ref conform)")
    parser.add_argument("--profile", default="diffusers", choices=list(ref.PROFILES),
                        help="diffusers (default) or strict (quirk inputs must raise ValueError)")
    parser.add_argument("--concerns", default=None, metavar="A,B",
                        help="comma-separated concerns, in this order (default all): " + ",".join(CONCERNS))
    parser.add_argument("--min-judged", type=int, default=None, metavar="N",
                        help="judged examples every concern needs to pass (default: each concern's own minimum)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="exit 0 instead of 3 when nothing fails but something could not be judged")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failing example unshrunk")


def main(args) -> int:
    from ..oracle import OracleMismatch, check, load_factory

    try:
        factory = load_factory(args.impl)
        report = check(factory, dtype=args.dtype, device=args.device, examples=args.examples, tables=args.tables,
                       profile=args.profile, concerns=args.concerns, shrink=not args.no_shrink, impl=args.impl,
                       min_judged=args.min_judged)
    except LCMRefError as e:
        print(f"lcm-ref check: {e}")
        return 2
    except OracleMismatch as e:
        print(f"FAIL {e}")
        r = e.result
        counts = f" ({r.failing_examples} of {r.examples} examples fail)" if r is not None else ""
        print(f"\nFAIL: {e.quantity}{counts}; check stops at the first failing concern (lcm-ref conform judges "
              "every concern)")
        return 1
    print(report)
    return 0 if report.status == "INCOMPLETE" and args.allow_incomplete else report.exit_code
