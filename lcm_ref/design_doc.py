"""The design document, shipped with the package, and its numbered sections.

Help texts, error messages, docstrings and reports cite the design document as ``docs/design.md §N`` (sub-points
``§6.Q3``, ``§8.B4``). In a checkout that file is ``docs/design.md``; an installed lcm_ref carries the same file as
``lcm_ref/design.md`` (the wheel is built from the one file), so ``lcm-ref docs §N`` prints a cited section
wherever lcm_ref is installed. The documentation site links every citation to the section's anchor
(``design/#s9.1``), which ``anchor`` names.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from lcm_ref.errors import LCMRefError

#: a section number as cited: 9, 9.1, 6.Q3, 8.B4
NUMBER = r"\d+(?:\.(?:[A-Z]\d+|\d+))?"
#: a citation: ``docs/design.md §9.1`` or a bare ``§9.1`` (group ``path``: the document named, if any)
CITATION = re.compile(r"(?P<path>(?:docs/)?design\.md )?§(?P<number>" + NUMBER + r")(?![\w.]*\w)")
#: what precedes a bare ``§N`` that numbers a section of another page (``reference_vs_gpu §3``: a report page's)
OTHER_PAGE = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+ $")
#: a numbered heading: ``## §9 The oracle``, ``### §9.1 ...``
HEADING = re.compile(r"^(?P<hashes>#{2,6}) §(?P<number>" + NUMBER + r") (?P<title>.*?)\s*$")
#: a numbered sub-point inside a section, written as a bullet: ``- **B6 Underflow.** ...``
SUBPOINT = re.compile(r"^- \*\*(?P<label>[A-Z]\d+) ")


@dataclasses.dataclass(frozen=True)
class Section:
    """A numbered part of the design document: ``number`` ("9.1", "8.B6"), ``title``, and its lines
    ``[start, end)`` in the file; a sub-point's lines are those of the section that holds it, ``within``."""

    number: str
    title: str
    start: int
    end: int
    within: str | None = None

    @property
    def anchor(self) -> str:
        """The id of the section's heading in the documentation site."""
        return anchor(self.number)


def anchor(number: str) -> str:
    """The site's anchor of section ``number``: ``"9.1"`` -> ``"s9.1"``."""
    return "s" + number


def path() -> Path:
    """The design document: ``lcm_ref/design.md`` of an install (in a checkout, ``docs/design.md``, which
    ``lcm_ref/design.md`` links to)."""
    return Path(__file__).resolve().with_name("design.md").resolve()


def sections(text: str | None = None) -> dict[str, Section]:
    """Every numbered section and sub-point of the design document (or of ``text``), by number, in order."""
    lines = (path().read_text(encoding="utf-8") if text is None else text).splitlines()
    heads = [(i, m) for i, line in enumerate(lines) if (m := HEADING.match(line))]
    found: dict[str, Section] = {}
    for k, (i, m) in enumerate(heads):
        level = len(m["hashes"])
        end = next((j for j, n in heads[k + 1:] if len(n["hashes"]) <= level), len(lines))
        found[m["number"]] = Section(m["number"], m["title"], i, end)
    for number, sec in list(found.items()):
        if "." in number:
            continue
        for i in range(sec.start, sec.end):
            if (m := SUBPOINT.match(lines[i])):
                holder = max((s for s in found.values() if s.start <= i < s.end), key=lambda s: s.start)
                title = lines[i][len(m[0]):].split("**", 1)[0].strip().rstrip(".")
                found[f"{number}.{m['label']}"] = Section(f"{number}.{m['label']}", title, holder.start, holder.end,
                                                          holder.number)
    return found


def section(number: str, text: str | None = None) -> Section:
    """Section ``number`` ("9.1", "§9.1", "8.B6"); ``LCMRefError`` naming the sections there are otherwise."""
    key = str(number).strip().removeprefix("§")
    found = sections(text)
    if key not in found:
        raise LCMRefError("section", number, "a section of the design document: " + ", ".join(
            "§" + n for n in found if "." not in n) + " (or a sub-section such as §9.1, §6.Q3, §8.B6)")
    return found[key]


def section_text(number: str, text: str | None = None) -> str:
    """The markdown of section ``number``, heading included (for a sub-point: the section that holds it)."""
    sec = section(number, text)
    lines = (path().read_text(encoding="utf-8") if text is None else text).splitlines()
    return "\n".join(lines[sec.start:sec.end]).rstrip() + "\n"


def citations(text: str) -> list[re.Match]:
    """The citations of the design document in ``text``: ``docs/design.md §N``, and bare ``§N`` except where a
    page's name precedes it (``timestep_scaling §4`` numbers a section of that report page)."""
    return [m for m in CITATION.finditer(text)
            if m["path"] or not OTHER_PAGE.search(text, max(0, m.start() - 60), m.start())]


def cited(text: str) -> list[str]:
    """The section numbers ``text`` cites (``citations``), in order, repeats included."""
    return [m["number"] for m in citations(text)]
