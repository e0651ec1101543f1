"""``lcm-ref paper``: train the networks of the learned testbed (the paper's figures on 8×8 digits).

``lcm-ref paper train`` trains the classifier, the teacher and every distillation run (the main student, the
timestep_scaling students, the Fig. 3 grid), in that order, resuming where an interrupted run stopped, into
./paper-train (``make paper``: into the checkout's package folders, the committed results). The report (``lcm-ref
report``) only evaluates: the committed networks, or with ``--weights``/``--runs`` the ones trained here.
"""

from __future__ import annotations

import shlex
import sys

from ..errors import LCMRefError


def configure_parser(parser):
    from ..studies.paper_train import GRIDS, STAGES
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("train", help="train the classifier, the teacher and the students (resumable)",
                       description="Train the learned testbed's networks (docs/design.md §11.1): resumable, fixed "
                       "seeds, float32. Everything goes under ./paper-train in the current directory (weights/, runs/, "
                       "work/) unless --weights, --runs, --work name other folders; never into the installed package. "
                       "`lcm-ref report --weights paper-train/weights --runs paper-train/runs` evaluates them.")
    p.add_argument("--only", metavar="STAGE", action="append", choices=STAGES,
                   help=f"train only this stage (repeatable): one of {', '.join(STAGES)}; a stage trains what it "
                   "needs first (students need the teacher and the classifier)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu; e.g. cuda)")
    p.add_argument("--grid", choices=tuple(GRIDS), default=None,
                   help="'cpu': the Fig. 3 runs cut to 1,000 iterations (default on a CPU); 'full': as long as the "
                   "main student (default on CUDA)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--student-iterations", type=int, default=None, metavar="N",
                   help="LCD iterations of the main student instead of the grid's (cpu and full: 20,000)")
    p.add_argument("--work", metavar="DIR", default=None,
                   help="where run states are kept for resuming (default ./paper-train/work)")
    p.add_argument("--weights", metavar="DIR", default=None,
                   help="where the weights go (default ./paper-train/weights)")
    p.add_argument("--runs", metavar="DIR", default=None,
                   help="where the training curves and wall times go (default ./paper-train/runs)")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="also copy the CSVs into this report data folder (default: no copy; `make paper` gives "
                   "reports/data)")
    p.add_argument("--force", action="store_true",
                   help="retrain the stages named by --only (all without it) even when done; what they need "
                   "first (classifier, teacher) is not redone unless named")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args) -> int:
    from ..studies.paper_train import train
    command = "lcm-ref paper " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else \
        "lcm-ref paper train"
    try:
        train(args.only, device=args.device, grid=args.grid, work=args.work, weights=args.weights, runs=args.runs,
              data_out=args.data, force=args.force, progress=not args.quiet, threads=args.threads, command=command,
              student_iterations=args.student_iterations)
    except LCMRefError as e:
        print(f"lcm-ref paper: error: {e}", file=sys.stderr)
        return 2
    return 0
