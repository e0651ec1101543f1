"""Every reference to the design document in the package, its help texts, golden vectors, notebooks, tests and
README points at a section of docs/design.md that exists; nothing cites a design document the project does not ship."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
#: a citation: "docs/design.md §8", "docs/design.md §6.Q3", "docs/design.md §3, §6", "docs/design.md §8.B4"
CITE = re.compile(r"docs/design\.md ((?:§[0-9]+(?:\.[A-Z]?[0-9]+)?)(?:(?:,| and| or) §[0-9]+(?:\.[A-Z]?[0-9]+)?)*)")
SOURCES = ("lcm_ref/**/*.py", "lcm_ref/**/*.json", "notebooks/*.ipynb", "tests/*.py", "README.md", "Makefile",
           "docs/*.md", "reports/*.md", "reports/data/*.md")


def sections() -> set:
    """The section ids docs/design.md defines: headings "## §N", "### §N.M" / "### §N.QK", and the bold labelled
    points of a section ("- **B4 …**" under "## §8" is §8.B4)."""
    ids, current = set(), None
    for line in DESIGN.read_text().splitlines():
        m = re.match(r"^#{2,4} (§([0-9]+)(?:\.[A-Z]?[0-9]+)?)\b", line)
        if m:
            ids.add(m.group(1))
            current = m.group(2) if line.startswith("## ") else current
            continue
        m = re.match(r"^\s*- \*\*([A-Z][0-9]+)\b", line)
        if m and current:
            ids.add(f"§{current}.{m.group(1)}")
    return ids


def citations():
    for pattern in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if ".venv" in path.parts:
                continue
            for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                for m in CITE.finditer(line):
                    for ref in re.findall(r"§[0-9]+(?:\.[A-Z]?[0-9]+)?", m.group(1)):
                        yield f"{path.relative_to(ROOT)}:{lineno}", ref


def test_design_document_is_shipped_and_numbered():
    """docs/design.md exists and has its 14 numbered top-level sections, in order."""
    top = re.findall(r"^## §([0-9]+) ", DESIGN.read_text(), flags=re.M)
    assert [int(n) for n in top] == list(range(1, 15))


def test_every_design_reference_resolves():
    """Each "docs/design.md §…" in code, help, vectors, notebooks, tests, README and reports names a section that
    exists (a mistyped or stale section number fails here)."""
    known = sections()
    cites = list(citations())
    assert len(cites) > 50, "the citation pattern no longer matches the code's citations"
    bad = [f"{where}: {ref}" for where, ref in cites if ref not in known]
    assert not bad, "unresolved design references:\n" + "\n".join(bad)


@pytest.mark.parametrize("stale", [r"DESIGN ?§", r"DESIGN\.md", r"shared/DESIGN"])
def test_no_reference_to_an_unshipped_design(stale):
    """Nothing cites the old, unshipped design notes (a grep for them finds nothing)."""
    hits = []
    for pattern in SOURCES:
        for path in ROOT.glob(pattern):
            if ".venv" in path.parts or path == Path(__file__):
                continue
            hits += [f"{path.relative_to(ROOT)}:{i}" for i, line in
                     enumerate(path.read_text(errors="replace").splitlines(), 1) if re.search(stale, line)]
    assert not hits, hits
