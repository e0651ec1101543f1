"""Every reference to the design document in the package, its help texts, golden vectors, notebooks, tests and
README points at a section of docs/design.md that exists; nothing cites a design document the project does not ship."""

import re
from pathlib import Path

import pytest

from lcm_ref import design_doc

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
#: a citation: "docs/design.md §8", "docs/design.md §6.Q3", "docs/design.md §3, §6", "docs/design.md §8.B4"
CITE = re.compile(r"docs/design\.md ((?:§[0-9]+(?:\.[A-Z]?[0-9]+)?)(?:(?:,| and| or) §[0-9]+(?:\.[A-Z]?[0-9]+)?)*)")
SOURCES = ("lcm_ref/**/*.py", "lcm_ref/**/*.json", "notebooks/*.ipynb", "tests/*.py", "README.md", "Makefile",
           "docs/*.md", "reports/*.md", "reports/data/*.md")


def sections() -> set:
    """The section ids docs/design.md defines (lcm_ref.design_doc, the parser `lcm-ref docs` and the site use):
    headings "## §N", "### §N.M" / "### §N.QK", and the bold labelled points of a section ("- **B4 …**" under
    "## §8" is §8.B4)."""
    return {"§" + n for n in design_doc.sections()}


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


def test_design_sections_parse():
    """The shared section parser finds every numbered heading of docs/design.md and the sub-points of §8.3, in
    order, and prints a section's text (`lcm-ref docs §N`)."""
    text = DESIGN.read_text(encoding="utf-8")
    headings = re.findall(r"^#{2,6} §(\S+) ", text, re.M)
    found = design_doc.sections()
    assert design_doc.path() == DESIGN.resolve()              # in a checkout, lcm_ref/design.md is docs/design.md
    assert [n for n in found if ".B" not in n] == headings
    assert [n for n in found if ".B" in n] == [f"8.B{i}" for i in range(1, 8)]
    assert all(found[f"8.B{i}"].within == "8.3" for i in range(1, 8))
    assert design_doc.section_text("§9.1").startswith("### §9.1 ")
    assert "### §9.2 " not in design_doc.section_text("9.1") and "### §9.2 " in design_doc.section_text("9")
    with pytest.raises(ValueError, match="section='§99'"):
        design_doc.section("§99")


def test_every_citation_the_site_links_resolves():
    """Every citation the documentation site turns into a link (lcm_ref.design_doc.citations: `docs/design.md §N`
    and bare `§N`, but not a report page's own `timestep_scaling §4`) names a section or sub-point that exists."""
    files = [p for pattern in SOURCES if not pattern.startswith("tests/") for p in ROOT.glob(pattern)
             if ".venv" not in p.parts]
    cited = [(str(f.relative_to(ROOT)), n) for f in files for n in design_doc.cited(f.read_text(errors="replace"))]
    assert len(cited) > 300                      # the project cites its design document a few hundred times
    found = design_doc.sections()
    assert not [(f, n) for f, n in cited if n not in found]
    assert design_doc.cited("docs/design.md §9.1, §6.Q3 (§8.B6); reference_vs_gpu §3, timestep_scaling §1–2") == [
        "9.1", "6.Q3", "8.B6"]
