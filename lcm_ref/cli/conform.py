"""``lcm-ref conform IMPL``: every conformance concern of a scheduler, each judged on its own
(``lcm_ref.oracle.conform``), from the shell. Exit status: 0 PASS (no concern fails, none inconclusive), 1 FAIL
(a concern fails), 2 a usage error (an IMPL that cannot be imported, a factory that does not build a scheduler, a
bad option), 3 INCOMPLETE (nothing fails, but something could not be judged on enough examples; 0 with
--allow-incomplete)."""

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

verdicts, each with its evidence (judged: examples compared with the reference / examples run):
  pass            at least the concern's minimum of judged examples (--min-judged), none failing
  fail            with the smallest failing case, got / want, the scaled error against the budget, a likely
                  cause and a replay(...) snippet; an exception from step, add_noise or get_velocity on a config
                  your scheduler accepted is a fail, with its traceback
  inconclusive    nothing failed, but fewer examples than the minimum could be judged (the reason is shown)
  unsupported     your scheduler refuses, on purpose, what the concern needs (NotImplementedError, a keyword or
                  value refused by the constructor or set_timesteps, a missing method)
  not_observable  it does not expose the quantity (e.g. no denoised in the step output)
run: PASS (exit 0), FAIL (exit 1), INCOMPLETE (exit 3: nothing fails, something was not judged; see the
INCOMPLETE lines), usage error (exit 2). An adapter's factory that lists its applicable concerns
(factory.concerns) is judged on those by default.
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
    parser.add_argument("--min-judged", type=int, default=None, metavar="N",
                        help="judged examples every concern needs to pass (default: each concern's own minimum, "
                             "docs/design.md §9.1)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="exit 0 instead of 3 when nothing fails but something could not be judged")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"a case that runs longer fails its concern (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--no-shrink", action="store_true",
                        help="report each concern's first failing case as found, without shrinking it")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the report as JSON (schema: lcm_ref/oracle/conformance.schema.json)")
    parser.add_argument("--markdown", default=None, metavar="FILE", help="also write the report as markdown")


def main(args) -> int:
    from ..numerics import write_atomic
    from ..oracle import load_factory
    from ..oracle.conform import conform

    try:
        factory = load_factory(args.impl)
    except LCMRefError as e:
        print(f"lcm-ref conform: cannot import IMPL: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the module itself fails to import (SyntaxError, RuntimeError, ...)
        print(f"lcm-ref conform: cannot import IMPL {args.impl!r}: importing it raises {type(e).__name__}: {e}",
              file=sys.stderr)
        return 2
    concerns = args.concerns
    if concerns is None and getattr(factory, "concerns", None):
        concerns = list(factory.concerns)          # an adapter's applicable concerns
    try:
        report = conform(factory, dtype=args.dtype, device=args.device, examples=args.examples, tables=args.tables,
                         profile=args.profile, concerns=concerns, timeout_s=args.timeout, impl=args.impl,
                         shrink=not args.no_shrink, min_judged=args.min_judged)
    except LCMRefError as e:
        print(f"lcm-ref conform: {e}", file=sys.stderr)
        return 2
    print(report)
    for path, text in ((args.json, report.to_json), (args.markdown, report.to_markdown)):
        if path:
            write_atomic(path, text())
            print(f"wrote {path}")
    if report.status == "INCOMPLETE" and args.allow_incomplete:
        return 0
    return report.exit_code
