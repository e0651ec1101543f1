"""The links of the pages ``lcm-ref report`` writes work wherever the pages are written: a relative link only to a
file that exists beside the report folder, plain text for notebooks that ship inside the installed package."""

import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lcm_ref.studies import report


def _notebooks(folder: Path, names) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        nb = new_notebook(cells=[new_markdown_cell(f"# {name}"), new_code_cell("pass")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def _links(out: Path) -> dict:
    """{page: [every markdown link target of the page that is not a web address]}."""
    return {p.name: [t for t in re.findall(r"\]\(([^)\s]+)\)", p.read_text()) if "://" not in t]
            for p in out.glob("*.md")}


def _run(monkeypatch, out, notebooks):
    monkeypatch.setattr(report, "_execute", lambda path, *a, **k: nbformat.read(path, as_version=4))
    return report.run(out, notebooks=notebooks, quiet=True)


def test_pages_link_the_notebooks_beside_them_and_every_link_resolves(tmp_path, monkeypatch):
    """Protects the links of a checkout's reports/ (notebooks/ beside it): each page links its notebook and the
    index the folder, relatively, and every relative link of every page resolves to a file or folder."""
    nbs = _notebooks(tmp_path / "notebooks", ["scheduler_behaviour", "conformance"])
    out = tmp_path / "reports"
    assert all(r.ok for r in _run(monkeypatch, out, nbs))
    links = _links(out)
    assert "../notebooks/conformance.ipynb" in links["conformance.md"]
    assert "../notebooks" in links["README.md"]
    for page, targets in links.items():
        for t in targets:
            assert (out / t.split("#")[0]).exists(), (page, t)


def test_pages_name_notebooks_inside_an_installed_package_without_a_link(tmp_path, monkeypatch):
    """Protects issue 16's broken `../notebooks` links outside the checkout: when the notebooks are not beside the
    report folder (a wheel's site-packages), the pages name them in plain text and link only to what exists under
    the report folder."""
    nbs = _notebooks(tmp_path / "site-packages" / "lcm_ref" / "notebooks", ["scheduler_behaviour", "conformance"])
    out = tmp_path / "work" / "reports"
    assert all(r.ok for r in _run(monkeypatch, out, nbs))
    links = _links(out)
    for page, targets in links.items():
        assert not [t for t in targets if "notebooks" in t], (page, targets)
        for t in targets:
            assert (out / t).exists() and (out / t).resolve().is_relative_to(out), (page, t)
    assert "`notebooks/conformance.ipynb` (shipped with lcm_ref" in (out / "conformance.md").read_text()
