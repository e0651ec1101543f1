"""`lcm-ref paper train` writes under the current directory only (never into the installed package), and the
evaluation reads a user's weights when told where they are."""

import hashlib
import json
from pathlib import Path

import pytest

from lcm_ref.cli import main as cli
from lcm_ref.studies import paper
from lcm_ref.testbed.digits import models

PACKAGE = Path(models.__file__).resolve().parent


def _tree(folder: Path) -> dict:
    """{relative path: SHA-256} of every file under ``folder`` (empty when it does not exist)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.is_dir() else {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`lcm-ref paper train --only classifier --force --quiet` run from an empty directory: (cwd, the package's
    files before, after, exit status). The classifier trains in seconds. (What the old defaults wrote besides the
    package, ./build/paper-train and ./reports/data, were relative to the current directory: the listing of cwd
    catches them.)"""
    import os
    cwd = tmp_path_factory.mktemp("paper-cwd")
    watched = {"package": PACKAGE}
    before = {k: _tree(v) for k, v in watched.items()}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        status = cli(["paper", "train", "--only", "classifier", "--force", "--quiet"])
    finally:
        os.chdir(old)
    after = {k: _tree(v) for k, v in watched.items()}
    return cwd, before, after, status


def test_paper_train_never_writes_into_the_package_or_outside_the_current_directory(trained):
    """Protects issue 16's "nothing is written into site-packages": the package's weights and runs stay
    byte-identical and the current directory holds only the ./paper-train folders the help text names."""
    cwd, before, after, status = trained
    assert status == 0
    assert after == before
    written = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file())
    assert written == ["paper-train/runs/training.csv", "paper-train/weights/classifier.json",
                       "paper-train/weights/classifier.safetensors"], written


def test_evaluation_reads_a_users_weights_and_runs_when_named(trained, monkeypatch):
    """Protects the way back from a user's training to the report: $LCM_REF_WEIGHTS / $LCM_REF_RUNS (what
    `lcm-ref report --weights/--runs` sets) make ``models.load`` and ``paper``'s readers use that folder, and the
    committed folders stay the default."""
    cwd, *_ = trained
    assert models.weights_folder() == models.WEIGHTS and paper.runs_folder() == paper.RUNS
    mine = json.loads((cwd / "paper-train/weights/classifier.json").read_text())
    monkeypatch.setenv(models.WEIGHTS_ENV, str(cwd / "paper-train/weights"))
    monkeypatch.setenv(paper.RUNS_ENV, str(cwd / "paper-train/runs"))
    committed = json.loads((models.WEIGHTS / "classifier.json").read_text())
    _, rec = models.load("classifier")
    assert rec == mine and mine["date"] != committed["date"]    # the same seed gives the same weights: the record
    assert models.load("classifier", weights=models.WEIGHTS)[1] == committed      # tells the folders apart
    rows = paper.training_times(out_dir=cwd / "data")
    assert [r["name"] for r in rows] == ["classifier"]
    # the teacher was not trained here: the error names the user's folder, not the package's
    with pytest.raises(Exception, match="paper-train/weights"):
        models.load("teacher")


def test_report_passes_the_folders_to_the_notebooks_under_the_names_the_readers_use():
    """Protects `lcm-ref report --weights/--runs`: report.run hands the folders to the notebooks through the same
    environment variables that ``models.weights_folder`` and ``paper.runs_folder`` read (report.py spells them out
    so as not to import torch), and refuses a folder that does not exist, naming the option."""
    import inspect

    from lcm_ref.errors import LCMRefError
    from lcm_ref.studies import report
    src = inspect.getsource(report.run)
    assert f'"{models.WEIGHTS_ENV}"' in src and f'"{paper.RUNS_ENV}"' in src
    with pytest.raises(LCMRefError, match="--weights"):
        report.run("unused", weights="/nonexistent/weights", only="conformance")
