"""``lcm-ref check IMPL``: the fail-fast oracle (``lcm_ref.oracle.check``) from the shell."""

from __future__ import annotations

from .. import reference as ref
from ..errors import LCMRefError
from ..oracle import DEFAULT_MAX_EXAMPLES, PARTS, OracleMismatch, check
from ..oracle.compare import load_impl


def configure_parser(parser):
    parser.add_argument("impl", help="the scheduler class or factory, as module:attr (e.g. diffusers:LCMScheduler), "
                        "imported from the current directory first")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"],
                        help="dtype of the samples and model outputs (default float32)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                        help=f"hypothesis examples (default {DEFAULT_MAX_EXAMPLES})")
    parser.add_argument("--profile", default="diffusers", choices=list(ref.PROFILES),
                        help="diffusers (default) or strict (quirk inputs must raise ValueError)")
    parser.add_argument("--quirks", action="store_true", help="also draw diffusers' quirk inputs (docs/design.md §6)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failing example unshrunk")


def main(args) -> int:
    try:
        factory = load_impl(args.impl)          # from the current directory first, as lcm-ref conform does
        report = check(factory, dtype=args.dtype, device=args.device, max_examples=args.examples,
                       profile=args.profile, quirks=True if args.quirks else None,
                       parts=tuple(p for p in args.parts.split(",") if p), shrink=not args.no_shrink,
                       impl=args.impl)
    except LCMRefError as e:
        print(f"lcm-ref check: {e}")
        return 2
    except OracleMismatch as e:
        print(f"MISMATCH {e}")
        return 1
    print(report)
    return 0
