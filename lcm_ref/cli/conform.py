"""``lcm-ref conform IMPL``: every conformance concern of a scheduler, each judged on its own
(``lcm_ref.oracle.conform``), from the shell. Exit status: 0 when no concern fails, 1 when one does, 2 on a usage
error (an IMPL that cannot be imported, a factory that does not build a scheduler, a bad option)."""

from __future__ import annotations

import argparse
import sys

from ..errors import LCMRefError

EPILOG = """examples:
  lcm-ref conform diffusers:LCMScheduler
  lcm-ref conform my_pkg.sched:MyLCM --dtype float16 --json my_lcm_fp16.json
  lcm-ref conform my_port:Scheduler --dtype float64 --tables float64      hold a float64 port to float64 tables
  lcm-ref conform my_port:Scheduler --concerns noise,prev_sample --examples 200

IMPL is module:attr, imported from the current directory first (as pytest does). The attribute is a class or
function that builds a scheduler from diffusers' LCMScheduler config keywords: IMPL(**config).

verdicts: pass; fail (with the smallest failing case, got / want, the scaled error against the budget, a likely
cause and a replay(...) snippet); unsupported (your scheduler refuses a config key or value, a keyword or a
method); not_observable (it does not expose the quantity, e.g. no denoised in the step output).
docs/design.md §9 explains every concern."""


def configure_parser(parser):
    from ..oracle.conform import CONCERNS, DEFAULT_TIMEOUT_S

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("impl", metavar="IMPL",
                        help="your scheduler class or factory as module:attr, e.g. diffusers:LCMScheduler")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"],
                        help="dtype of the samples and model outputs your scheduler gets (default float32)")
    parser.add_argument("--device", default="cpu", help="torch device to run on, e.g. cuda (default cpu)")
    parser.add_argument("--examples", type=int, default=None, metavar="N",
                        help="hypothesis examples per concern (default: each concern's own count, sized to run "
                             "in about 30 s on one CPU core); canonical cases always run too")
    parser.add_argument("--tables", default="float32", choices=["float32", "float64"],
                        help="table precision allowed: float32 (default; diffusers keeps float32 tables for any "
                             "dtype) or float64 (correctly rounded float64 tables, for a float64 port)")
    parser.add_argument("--profile", default="diffusers", choices=["diffusers", "strict"],
                        help="diffusers (default): do what diffusers does, quirks included; strict: input "
                             "diffusers mishandles must raise a ValueError naming the parameter")
    parser.add_argument("--concerns", default=None, metavar="A,B",
                        help="comma-separated concerns to check (default all): " + ",".join(CONCERNS))
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"a case that runs longer fails its concern (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--no-shrink", action="store_true",
                        help="report each concern's first failing case as found, without shrinking it")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the report as JSON (schema: lcm_ref/oracle/conformance.schema.json)")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the report as markdown")


def main(args) -> int:
    from ..numerics import write_atomic
    from ..oracle.check import load_factory
    from ..oracle.compare import cwd_importable
    from ..oracle.conform import conform

    cwd_importable()          # module:attr resolves against the current directory first
    try:
        factory = load_factory(args.impl)
    except LCMRefError as e:
        print(f"lcm-ref conform: cannot import IMPL: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the module itself fails to import (SyntaxError, RuntimeError, ...)
        print(f"lcm-ref conform: cannot import IMPL {args.impl!r}: importing it raises {type(e).__name__}: {e}",
              file=sys.stderr)
        return 2
    try:
        report = conform(factory, dtype=args.dtype, device=args.device, examples=args.examples, tables=args.tables,
                         profile=args.profile, concerns=args.concerns, timeout_s=args.timeout, impl=args.impl,
                         shrink=not args.no_shrink)
    except LCMRefError as e:
        print(f"lcm-ref conform: {e}", file=sys.stderr)
        return 2
    print(report)
    for path, text in ((args.json, report.to_json), (args.markdown, report.to_markdown)):
        if path:
            write_atomic(path, text())
            print(f"wrote {path}")
    return 0 if report.ok else 1
