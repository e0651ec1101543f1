"""``lcm-ref``: the command line. Each subcommand lives in its own module, imported only when it runs.

A subcommand module defines ``configure_parser(parser)`` (adds its arguments) and ``main(args) -> int``.
"""

DESCRIPTION = ("The numerical ground truth for diffusers' LCMScheduler (Latent Consistency Models, Algorithm 3): "
               "what the right answer is for a config and input, and how far a scheduler is from it.")
EPILOG = """examples:
  lcm-ref timesteps --steps 4 --strength 0.5      what a config does, step by step
  lcm-ref conform my_pkg.sched:MyLCM              every conformance concern of your scheduler, on its own
  lcm-ref check diffusers:LCMScheduler            the fail-fast check: stops at the first difference
  lcm-ref vectors check --impl my_pkg:MyLCM       your scheduler against the golden vectors
  lcm-ref report --out my_reports                 execute the notebooks into my_reports/
  lcm-ref docs §9.1                               print a section the help texts cite (docs/design.md §9.1)

'lcm-ref COMMAND --help' for a command's options. The design document (docs/design.md, shipped with the package)
explains every check; 'lcm-ref docs §N' prints the section a message cites as 'docs/design.md §N'."""

#: appended to a command's help when it cites the design document
CITATIONS = "'docs/design.md §N' is the design document shipped with the package: 'lcm-ref docs §N' prints that section."

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "timesteps": ("lcm_ref.cli.timesteps", "print the schedule with ᾱ, c_skip, c_out and noise level per step"),
    "conform": ("lcm_ref.cli.conform", "judge a scheduler (module:attr) on every conformance concern, each on its "
                "own: pass / fail / unsupported / not_observable"),
    "check": ("lcm_ref.cli.check", "check a scheduler (module:attr) against the reference; stops at the first "
              "difference"),
    "vectors": ("lcm_ref.cli.vectors", "generate or check the golden vectors"),
    "bench": ("lcm_ref.cli.bench", "benchmark lcm_ref's torch scheduler against diffusers' (ratios, same run)"),
    "report": ("lcm_ref.cli.report", "execute the notebooks into a report folder"),
    "paper": ("lcm_ref.cli.paper", "train the learned testbed's networks (the paper's figures on 8×8 digits)"),
    "docs": ("lcm_ref.cli.docs", "print where the design document is, or the section a citation names (§9.1)"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="lcm-ref", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.parse_args(argv)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    p = argparse.ArgumentParser(prog=f"lcm-ref {name}", description=COMMANDS[name][1])
    module.configure_parser(p)
    if name != "docs" and "design.md §" in (p.format_help()):
        # a citation must be followable from a pip install, where docs/ is not: say how, under the command's own help
        p.epilog = (p.epilog or "") + ("\n\n" if p.epilog else "") + CITATIONS
    return int(module.main(p.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
