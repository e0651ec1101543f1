"""``lcm-ref``: the command line. Each subcommand lives in its own module, imported only when it runs.

A subcommand module defines ``configure_parser(parser)`` (adds its arguments) and ``main(args) -> int``.
"""

import argparse
import importlib
import sys

#: subcommand -> (module, one-line help)
COMMANDS = {
    "timesteps": ("lcm_ref.cli_timesteps", "print the schedule with ᾱ, c_skip, c_out and noise level per step"),
    "bench": ("lcm_ref.bench", "benchmark TorchLCM against diffusers' LCMScheduler (ratios, same run)"),
    "check": ("lcm_ref.oracle", "check a scheduler (module:attr) against the reference"),
    "vectors": ("lcm_ref.vectors", "generate or check the golden vectors"),
    "report": ("lcm_ref.report", "execute the notebooks into reports/"),
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="lcm-ref", description=__doc__.splitlines()[0])
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
    return int(module.main(p.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
