"""lcm_ref works from a wheel: build it, install it (no dependencies: they are this environment's) into a folder of
its own, and run the commands a user runs from a directory outside the checkout. Catches data files missing from
the wheel (notebooks, vectors, schemas), paths into the checkout, and commands that write into site-packages."""

import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder with the wheel installed, a work directory outside the checkout, the wheel's file list)."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, capture_output=True, cwd=tmp)
    wheel = next((tmp / "dist").glob("lcm_ref-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(tmp / "site"), str(wheel)], check=True, capture_output=True, cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    return tmp / "site", work, names


def run(installed, *argv, timeout=600):
    site, work, _ = installed
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "lcm_ref.cli", *argv], cwd=work, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _tree(folder):
    """{path: SHA-256 of the bytes} of everything under ``folder`` (folders map to None): a rewrite shows too."""
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in folder.rglob("*")}


def test_wheel_carries_every_package_and_data_file(installed):
    """Every package of the source tree, the notebooks, the golden vectors, the JSON schemas and the C++ worked
    example are in the wheel."""
    _, _, names = installed
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "lcm_ref").rglob("__init__.py")}
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, pkg
    wanted = [f"lcm_ref/notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")]
    wanted += [str(p.relative_to(ROOT)) for p in (ROOT / "lcm_ref").rglob("*.json")]
    wanted += [str(p.relative_to(ROOT)) for ext in ("*.hpp", "*.cpp") for p in (ROOT / "lcm_ref").rglob(ext)]
    assert len(wanted) >= 10
    assert not [w for w in wanted if w not in names]


def test_commands_run_from_the_wheel_outside_the_checkout(installed):
    """timesteps, check, conform, vectors check and paper train run from the installed wheel (not the checkout) in
    a foreign directory, and write nothing into the installed package."""
    site, work, _ = installed
    before = _tree(site / "lcm_ref")
    where = run(installed, "timesteps", "--steps", "4", "--csv")
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines()[1].startswith("0,999"), where.stdout
    probe = subprocess.run([sys.executable, "-c", "import lcm_ref; print(lcm_ref.__file__)"], cwd=work,
                           env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert Path(probe.stdout.strip()).is_relative_to(site)
    r = run(installed, "check", "diffusers:LCMScheduler", "--examples", "3", "--concerns", "timesteps,denoised",
            "--min-judged", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    # the earned verdicts from the wheel: the wrong scheduler is INCOMPLETE (3), a crashing port FAIL (1) with its
    # traceback, a port in the current directory imported from there
    r = run(installed, "conform", "diffusers:DDIMScheduler")
    assert r.returncode == 3 and "the default config is refused" in r.stdout, r.stdout + r.stderr
    (work / "crashing_port.py").write_text(
        "from diffusers import LCMScheduler\n\n\nclass Port(LCMScheduler):\n"
        "    def step(self, *args, **kwargs):\n        return self.alphas_cumprd\n")
    r = run(installed, "conform", "crashing_port:Port", "--concerns", "denoised", "--examples", "2")
    assert r.returncode == 1 and "AttributeError" in r.stdout and "crashing_port.py:" in r.stdout, r.stdout
    r = run(installed, "vectors", "check")
    assert r.returncode == 0 and "0 failed" in r.stdout, r.stdout + r.stderr
    # paper train (the classifier: seconds) writes under ./paper-train, not into the package's weights
    r = run(installed, "paper", "train", "--only", "classifier", "--force", "--quiet")
    assert r.returncode == 0 and (work / "paper-train" / "weights" / "classifier.safetensors").is_file(), r.stderr
    assert _tree(site / "lcm_ref") == before


def test_report_runs_from_the_wheel_into_a_chosen_folder(installed):
    """`lcm-ref report --fast --out DIR` executes the shipped notebooks into DIR (two pages here, to keep the suite
    fast: the page with no heavy sweep, and the conformance page, which only reads files). From a wheel the
    conformance page has no reports: it says how to make them with `lcm-ref conform` and claims no verdict; no page
    links to a file that is not under DIR (the notebooks ship inside the package)."""
    _, work, _ = installed
    r = run(installed, "report", "--fast", "--only", "scheduler_behaviour", "--only", "conformance", "--out", "out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "out" / "scheduler_behaviour.md").is_file()
    assert (work / "out" / "README.md").is_file()
    page = (work / "out" / "conformance.md").read_text()
    assert "lcm-ref conform diffusers:LCMScheduler --dtype float32 --json reports/data/conformance/" in page
    assert "No concern fails" not in page and "no verdict" in page
    for md in (work / "out").glob("*.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
            assert (work / "out" / target).resolve().is_relative_to(work / "out"), (md.name, target)
            assert (work / "out" / target).exists(), (md.name, target)


def test_help_citations_are_followable_from_the_wheel(installed):
    """Every `docs/design.md §N` that the help texts cite leads somewhere from a pip install: the wheel carries
    the design document itself (identical to docs/design.md), and `lcm-ref docs §N` prints each cited section
    from it."""
    site, _, names = installed
    assert "lcm_ref/design.md" in names
    assert (site / "lcm_ref" / "design.md").read_bytes() == (ROOT / "docs" / "design.md").read_bytes()
    helps = [run(installed, "--help")]
    helps += [run(installed, name, "--help") for name in ("timesteps", "conform", "check", "vectors", "bench",
                                                          "report", "paper", "docs")]
    text = "\n".join(h.stdout for h in helps)
    assert all(h.returncode == 0 for h in helps) and "lcm-ref docs §" in text
    cited = sorted(set(re.findall(r"§(\d+(?:\.(?:[A-Z]\d+|\d+))?)", text)))
    assert cited, "the help texts cite no section"
    for number in cited + ["9.1"]:
        r = run(installed, "docs", f"§{number}")
        assert r.returncode == 0, r.stderr
        assert str(site) in r.stdout.splitlines()[0], r.stdout[:300]
        assert re.search(rf"^#+ §{re.escape(number)} |§{re.escape(number)}, ", r.stdout, re.M), r.stdout[:300]
    r = run(installed, "docs", "§99")
    assert r.returncode == 2 and "section='§99'" in r.stderr
