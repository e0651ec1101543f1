"""``lcm-ref timesteps``: print the schedule a config gives, with ᾱ, σ, c_skip and c_out per step.

The quickest way to see what a config does. Every number comes from ``lcm_ref.reference`` (float64, each within
1 ulp of exact). The noise level printed is σ_t = √(1−ᾱ_t)/√ᾱ_t, the VE (k-diffusion / ComfyUI) sigma of the sample
at t; the VP sample's noise standard deviation √(1−ᾱ_t) = σ/√(1+σ²).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings

from .. import reference as ref
from ..studies.behaviour import schedule_table
from ..config import LCMConfig
from ..errors import LCMRefError

COLUMNS = ("step", "t", "alpha_bar", "sigma", "c_skip", "c_out", "one_minus_c_out", "next_t")
HEADERS = ("step", "t", "ᾱ", "σ", "c_skip", "c_out", "1 − c_out", "next_t")
WIDTHS = (4, 6, 16, 16, 16, 20, 16, 6)


def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < 1:
            raise argparse.ArgumentTypeError(f"{name}={text!r} is not allowed: an integer >= 1")
        return v
    return parse


def _timestep_list(text):
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timesteps={text!r} is not allowed: comma-separated integers") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0].split(": ", 1)[1]
    parser.epilog = "σ = √(1−ᾱ)/√ᾱ (VE / k-diffusion sigma). Example: lcm-ref timesteps --steps 4 --strength 0.5"
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--steps", type=_positive_int("--steps"), metavar="N", help="num_inference_steps")
    which.add_argument("--timesteps", type=_timestep_list, metavar="T1,T2,...",
                       help="a custom schedule instead of --steps (as set_timesteps(timesteps=...))")
    parser.add_argument("--original-steps", type=_positive_int("--original-steps"), metavar="M",
                        help="original_inference_steps (default: the config's, 50)")
    parser.add_argument("--strength", type=float, default=1.0, metavar="S", help="img2img strength (default 1.0)")
    parser.add_argument("--config", metavar="scheduler_config.json",
                        help="a diffusers scheduler config (default: LCMScheduler's defaults)")
    parser.add_argument("--profile", choices=ref.PROFILES, default="diffusers",
                        help="'diffusers' (default) reproduces diffusers; 'strict' refuses what diffusers mishandles")
    parser.add_argument("--csv", action="store_true", help="CSV with every float in full (repr) precision")


def _fmt(column, v, width):
    if v is None:
        return f"{'—':>{width}}"
    if isinstance(v, int):
        return f"{v:>{width}d}"
    return f"{v:>{width}.{15 if column == 'c_out' else 8}{'f' if column == 'c_out' else 'e'}}"


def main(args) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cfg = LCMConfig.from_json(args.config) if args.config else LCMConfig()
            sched = ref.set_timesteps(cfg, args.steps, original_inference_steps=args.original_steps,
                                      timesteps=args.timesteps, strength=args.strength, profile=args.profile)
        except (LCMRefError, ValueError, ZeroDivisionError, IndexError, OSError, json.JSONDecodeError) as e:
            print(f"lcm-ref timesteps: error: {e}", file=sys.stderr)
            return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    rows = schedule_table(cfg, sched.timesteps, sched.num_inference_steps)
    if args.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(COLUMNS)
        for r in rows:
            out.writerow(["" if r[c] is None else repr(r[c]) for c in COLUMNS])
        return 0
    orig = args.original_steps or cfg.original_inference_steps
    print(f"config: {cfg!r}")
    print(f"schedule: {len(rows)} timesteps (original_inference_steps={orig}, strength={args.strength}, "
          f"k = T // original_inference_steps = {cfg.num_train_timesteps // orig}, profile={args.profile})")
    if sched.num_inference_steps != len(rows):
        print(f"note: diffusers keeps num_inference_steps={sched.num_inference_steps} != {len(rows)} timesteps, so the "
              "last step is not treated as last and its output is re-noised (quirk 1; --profile strict fixes it)")
    print("σ = √(1−ᾱ)/√ᾱ (VE noise level of the sample at t); next_t = the timestep the step re-noises to "
          "(— on the last step: no noise)")
    print("  ".join(f"{h:>{w}}" for h, w in zip(HEADERS, WIDTHS)))
    for r in rows:
        print("  ".join(_fmt(c, r[c], w) for c, w in zip(COLUMNS, WIDTHS)))
    bad = [r["t"] for r in rows if r["alpha_bar"] != r["alpha_bar"]]
    if bad:
        print(f"note: timesteps {bad} are outside [0, {cfg.num_train_timesteps}): ᾱ is undefined there and "
              "diffusers' step raises IndexError (quirk 4: strength > 1 is not checked)")
    return 0
