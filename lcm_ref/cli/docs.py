"""``lcm-ref docs [§N]``: where the design document is, and the text of a section it cites.

Help texts, errors and reports cite the design document as ``docs/design.md §N``. An installed lcm_ref carries
that document (``lcm_ref/design.md``), so a citation is followable from a pip install: ``lcm-ref docs §9.1`` prints
the section, ``lcm-ref docs`` the file's path and its table of sections.
"""

from __future__ import annotations

import argparse
import sys

from .. import design_doc
from ..errors import LCMRefError


def configure_parser(parser):
    parser.epilog = ("examples:\n  lcm-ref docs            the design document's path and its sections\n"
                     "  lcm-ref docs §9.1       the text of docs/design.md §9.1 (also 9.1, §6.Q3, §8.B6)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("section", nargs="?", help="a section number as cited: §9, §9.1, 6.Q3, §8.B6")


def main(args) -> int:
    path = design_doc.path()
    if args.section is None:
        print(f"The design document (cited as docs/design.md §N): {path}")
        print("Sections (lcm-ref docs §N prints one):")
        for number, sec in design_doc.sections().items():
            if ".B" not in number:
                print(f"  {'  ' if '.' in number else ''}§{number:<6} {sec.title}")
        return 0
    try:
        sec = design_doc.section(args.section)
    except LCMRefError as e:
        print(f"lcm-ref docs: {e}", file=sys.stderr)
        return 2
    within = f" (§{sec.number}, {sec.title}, is a point of §{sec.within})" if sec.within else ""
    print(f"{path}, line {sec.start + 1}{within}:\n")
    sys.stdout.write(design_doc.section_text(sec.number))
    return 0
