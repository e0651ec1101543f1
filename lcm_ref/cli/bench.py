"""``lcm-ref bench``: TorchLCM against diffusers' LCMScheduler, as ratios measured in the same run."""

from __future__ import annotations

from ..studies.bench import accuracy_rows, markdown_table, run_benchmarks, write_outputs


def configure_parser(parser):
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads during the run (default 1; 0 keeps torch's default)")
    parser.add_argument("--fast", action="store_true", help="fewer repeats, no compiled variants")
    parser.add_argument("--out", default="reports/data", help="output folder (default ./reports/data in the current directory)")


def main(args) -> int:
    rows = run_benchmarks(args.device, args.fast, progress=True, threads=args.threads or None)
    accuracy = accuracy_rows(args.device)
    print(markdown_table(rows))
    print()
    print(markdown_table(accuracy))
    for path in write_outputs(rows, accuracy, args.out, args.device):
        print(f"wrote {path}")
    return 0
