"""Claims the report pages make, held by tests (issue 16): bench's accuracy bounds are the torch engine's derived
bounds, the quirk demos compare with diffusers' live output, and GPU evidence is labelled and marked stale when the
engine it measured has changed."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from lcm_ref import LCMConfig
from lcm_ref.studies import behaviour as B
from lcm_ref.studies import bench, evidence
from lcm_ref.torch_impl import bounds

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "reports" / "data"


# --- bench bounds ------------------------------------------------------------------------------------------------

def test_bench_accuracy_bounds_are_torch_impl_bounds(monkeypatch):
    """bench.accuracy_rows reports torch_impl.bounds.step_bounds(float32, step_kind(cfg)) for every config, and follows
    it when it changes (a hard-coded 0.5 / 1.5 / 2.0 would not)."""
    monkeypatch.setattr(bench, "ACCURACY_CONFIGS", {k: bench.ACCURACY_CONFIGS[k]
                                                    for k in ("default (epsilon)", "clip_sample", "thresholding")})
    rows = bench.accuracy_rows(shape=(1, 2, 4, 4), steps=2)
    for r in rows:
        want = bounds.step_bounds(torch.float32, bounds.step_kind(bench.ACCURACY_CONFIGS[r["config"]]))
        assert (r["bound_denoised"], r["bound_prev"]) == want
    monkeypatch.setattr(bench, "step_bounds", lambda dtype, kind: (7.0, 9.0))
    assert {(r["bound_denoised"], r["bound_prev"]) for r in bench.accuracy_rows(shape=(1, 2, 4, 4), steps=2)} \
        == {(7.0, 9.0)}


# --- quirk demos -----------------------------------------------------------------------------------------------

def test_quirk_demos_compare_live():
    """Every quirk demo's lcm_ref line carries the result of a comparison with diffusers' output, and each agrees."""
    for q in B.quirks(seed=0):
        assert "(same)" not in q.reference and "as diffusers." not in q.reference
        assert "equal to diffusers'" in q.reference or "agrees with diffusers" in q.reference, q
        assert "differs" not in q.reference, q


def test_comparison_says_differs_on_mutated_outputs():
    """Mutants: one element of diffusers' denoised made 0.1 % larger (here ≈ 0.03 absolute, 20× its float32 budget of
    ≈ 1.5e-3 at t = 759 where |denoised| ≈ 30), or made NaN, and a timestep list with one entry changed are each
    reported as "differs" (the comparison can fail)."""
    cfg = LCMConfig()
    run = B.run_diffusers(B.diffusers_scheduler(cfg), {"num_inference_steps": 4}, seed=0)
    assert B.compare_with_reference(cfg, run).startswith("agrees")
    for mutate in (lambda t: t.view(-1).__setitem__(5, t.view(-1)[5] * 1.001),
                   lambda t: t.view(-1).__setitem__(5, float("nan"))):
        outs = [(p.clone(), d.clone()) for p, d in run.outputs]
        mutate(outs[1][1])
        said = B.compare_with_reference(cfg, run._replace(outputs=outs))
        assert said.startswith("differs from diffusers at call 2"), said
    assert B.same_as_diffusers([999, 759], [999, 759]) == "equal to diffusers'"
    assert B.same_as_diffusers([999, 759], [999, 758]).startswith("differs")


# --- GPU evidence ----------------------------------------------------------------------------------------------

def _label(sha):
    return {"commit": "0" * 40, "torch": "2.11.0", "date": "2026-11-26", "code_paths": ["lcm_ref/torch_impl.py"],
            "code_sha256": sha}


def test_staleness_rule():
    """Evidence is current only when its measured code's fingerprint equals the engine's now; a one-byte change,
    or no label at all, makes it stale with the reason on the page."""
    now = evidence.engine_sources()
    assert evidence.status(_label(evidence.fingerprint(now)))[0] is False
    changed = dict(now)
    first = sorted(changed)[0]
    changed[first] = changed[first] + b" "
    stale, why = evidence.status(_label(evidence.fingerprint(changed)))
    assert stale and why.startswith("stale: made at commit 0000000000 with torch 2.11.0") and "changed since" in why
    assert evidence.status(None)[0] is True


def test_record_labels_new_evidence(tmp_path):
    """record() labels files with this code's fingerprint and torch version, so fresh evidence reads as current."""
    evidence.record(tmp_path, ["bench_cuda.csv"], commit="abc")
    meta = evidence.label(tmp_path, "bench_cuda.csv")
    assert meta["commit"] == "abc" and meta["torch"] == torch.__version__
    stale, why = evidence.status(meta)
    assert not stale and why.startswith("current: made at commit abc")


def test_committed_gpu_evidence_is_labelled_and_stale():
    """Every committed GPU file has a label; each label's fingerprint is that of the code at its commit (checked with
    git where the checkout has it); the engine has been split since, so all of them read as stale."""
    doc = json.loads((DATA / evidence.SIDECAR).read_text())["files"]
    names = sorted(p.name for p in DATA.iterdir() if "cuda" in p.name and p.name != evidence.SIDECAR)
    assert sorted(doc) == names
    git = shutil.which("git") and (ROOT / ".git").exists()
    for name in names:
        meta = doc[name]
        assert evidence.status(meta)[0], name
        known = git and not subprocess.run(["git", "cat-file", "-e", f"{meta['commit']}^{{commit}}"], cwd=ROOT,
                                           capture_output=True).returncode      # a shallow clone may lack it
        if known:
            src = {p: subprocess.run(["git", "show", f"{meta['commit']}:{p}"], cwd=ROOT, capture_output=True,
                                     check=True).stdout for p in meta["code_paths"]}
            assert evidence.fingerprint(src) == meta["code_sha256"], name


def test_gpu_evidence_rows_show_status():
    """The reference_vs_gpu page's table gives each GPU file its status sentence."""
    from lcm_ref.studies.accuracy import gpu_evidence
    rows = gpu_evidence(DATA)
    assert rows and all(r["status"].startswith("stale: made at commit") for r in rows)


def test_record_refuses_a_string(tmp_path):
    """record() names the parameter when given one string instead of a list of names, and writes nothing."""
    from lcm_ref.errors import LCMRefError
    with pytest.raises(LCMRefError, match="names"):
        evidence.record(tmp_path, "bench_cuda.csv")
    assert not list(tmp_path.iterdir())
