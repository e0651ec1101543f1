"""``lcm-ref report``: notebooks committed clean, outputs converted to markdown + PNG, atomic replacement of the
reports folder, and every notebook executed for real (fast mode) into a temporary folder."""

import base64
import io
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lcm_ref.studies import report
from lcm_ref.errors import LCMRefError

NOTEBOOKS = Path(report.ROOT) / "notebooks"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_png() -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(0.2, 0.2))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@pytest.mark.parametrize("name", report.ORDER)
def test_notebook_committed_without_outputs(name):
    """Each of the five notebooks exists, is valid nbformat 4, uses the python3 kernel, and has no outputs or
    execution counts (so diffs show only code and text)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def synthetic_notebook(png):
    nb = new_notebook()
    nb.cells = [
        new_markdown_cell("# Title\n\nIntro text."),
        new_code_cell("x = 1", metadata={"tags": ["remove-input"]}, outputs=[
            new_output("stream", name="stdout", text="printed\n"),
            new_output("stream", name="stderr", text="progress bar noise\n")]),
        new_code_cell("plot()", outputs=[
            new_output("display_data", data={"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"}),
            new_output("display_data", data={"text/markdown": "| a |\n|---|\n| 1 |", "text/plain": "<Markdown>"}),
            new_output("execute_result", data={"text/plain": "42"}, execution_count=1)]),
        new_code_cell("hidden()", metadata={"tags": ["remove-output"]}, outputs=[
            new_output("stream", name="stdout", text="should not appear\n")]),
        new_code_cell("boom()", outputs=[new_output("error", ename="ValueError", evalue="bad",
                                                    traceback=["\x1b[31mTraceback\x1b[0m", "ValueError: bad"])]),
    ]
    return nb


def test_outputs_become_markdown_and_png(tmp_path):
    """Markdown cells pass through; image/png becomes a PNG file (same bytes) linked from the page; text/markdown
    is inlined; stdout and text/plain go in code blocks; stderr and remove-output are dropped; remove-input hides
    the code; errors keep their traceback without ANSI codes; the header goes under the title."""
    png = tiny_png()
    text, figs = report.notebook_to_markdown(synthetic_notebook(png), "demo", tmp_path, header="_HEADER_")
    assert [f.name for f in figs] == ["demo-01.png"]
    assert (tmp_path / "demo-01.png").read_bytes() == png
    assert "![demo figure 1](figures/demo-01.png)" in text
    assert text.startswith("# Title\n\n_HEADER_\n\nIntro text.")
    assert "| a |\n|---|\n| 1 |" in text
    assert "```text\nprinted\n```" in text and "```text\n42\n```" in text
    assert "progress bar noise" not in text and "should not appear" not in text
    assert "x = 1" not in text and "```python\nplot()\n```" in text
    assert "ValueError: bad" in text and "\x1b" not in text


def test_csv_round_trip(tmp_path):
    """save_csv writes floats (NumPy's too, whose repr is "np.float64(…)") in repr precision (read back bit for bit)
    and lists space-joined; md_table renders None as — and escapes pipes."""
    rows = [{"a": 0.1 + 0.2, "b": [1, 2], "c": None, "d": "x|y", "e": np.float64(0.1) + 0.2}]
    path = tmp_path / "sub" / "t.csv"
    report.save_csv(rows, path)
    back = report.read_csv(path)
    assert back[0]["a"] == 0.1 + 0.2 and back[0]["b"] == "1 2" and back[0]["c"] == ""
    assert back[0]["e"] == 0.1 + 0.2
    table = report.md_table(rows)
    assert "| [1, 2] | — | x\\|y |" in table
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]          # no temporary file left behind


def fake_notebooks(folder, names):
    folder.mkdir()
    for name in names:
        nb = new_notebook(cells=[new_markdown_cell(f"# {name}"), new_code_cell("pass")])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def previous_reports(out):
    out.mkdir()
    (out / "data").mkdir()
    (out / "scheduler_behaviour.md").write_text("OLD PAGE")
    (out / "stale.md").write_text("from an older run")
    (out / "data" / "bench_cuda.csv").write_text("device\nH100\n")
    (out / "data" / "bench_cuda_accuracy.csv").write_text("config\n")
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_interrupted_run_leaves_previous_reports(tmp_path, monkeypatch):
    """A run interrupted mid-way (Ctrl-C in the second notebook) leaves the previous reports byte-identical and no
    temporary folder beside them."""
    nbs = fake_notebooks(tmp_path / "nbs", ["scheduler_behaviour", "reference_vs_gpu"])
    out = tmp_path / "reports"
    before = previous_reports(out)
    calls = []

    def fake_execute(path, workdir, timeout, progress, env):
        calls.append(path.stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return nbformat.read(path, as_version=4)
    monkeypatch.setattr(report, "_execute", fake_execute)
    with pytest.raises(KeyboardInterrupt):
        report.run(out, notebooks=nbs, quiet=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nbs", "reports"]


def test_full_run_replaces_and_keeps_gpu_results(tmp_path, monkeypatch):
    """A full run replaces the folder (stale pages go), keeps data/*cuda* files (also ones written into the live
    folder while it ran), and a failing notebook keeps its previous page while the others are written."""
    nbs = fake_notebooks(tmp_path / "nbs", ["scheduler_behaviour", "reference_vs_gpu"])
    out = tmp_path / "reports"
    previous_reports(out)

    def fake_execute(path, workdir, timeout, progress, env):
        assert env["LCM_REF_DATA"].endswith("data") and env["LCM_REF_FAST"] == "1"
        if path.stem == "scheduler_behaviour":
            raise RuntimeError("cell failed")
        # meanwhile, GPU results land in the live folder (another process): they must survive the swap
        time.sleep(0.01)
        (out / "data" / "cuda_oracle.md").write_text("written during the run")
        (out / "data" / "bench_cuda.csv").write_text("device\nH200\n")
        return nbformat.read(path, as_version=4)
    monkeypatch.setattr(report, "_execute", fake_execute)
    results = report.run(out, fast=True, notebooks=nbs, quiet=True)
    assert [(r.name, r.ok) for r in results] == [("scheduler_behaviour", False), ("reference_vs_gpu", True)]
    assert (out / "data" / "bench_cuda.csv").read_text() == "device\nH200\n"
    assert (out / "data" / "bench_cuda_accuracy.csv").read_text() == "config\n"
    assert (out / "data" / "cuda_oracle.md").read_text() == "written during the run"
    assert not (out / "stale.md").exists()
    assert (out / "reference_vs_gpu.md").exists()
    assert (out / "scheduler_behaviour.md").read_text() == "OLD PAGE"
    # --only keeps everything else as it was
    (out / "keep.md").write_text("kept")
    report.run(out, fast=True, notebooks=nbs, only="reference_vs_gpu", quiet=True)
    assert (out / "keep.md").read_text() == "kept"


def test_only_unknown_name():
    """--only with a name that is not a notebook is a clear error listing the valid names."""
    with pytest.raises(LCMRefError, match=r"--only='nope'.*scheduler_behaviour"):
        report.run("/nonexistent/never-written", only="nope", quiet=True)


@pytest.fixture(scope="module")
def fast_reports(tmp_path_factory):
    """All notebooks executed for real in fast mode into a temporary folder."""
    out = tmp_path_factory.mktemp("rep") / "reports"
    results = report.run(out, fast=True, quiet=True)
    return out, results


def test_every_notebook_executes_into_a_page(fast_reports):
    """Every notebook executes without error in fast mode and becomes a page with at least one figure; every figure
    the page links to exists and is a PNG; the numbers behind the figures are in data/*.csv; the index links every
    page and names the versions, device, seed and date."""
    out, results = fast_reports
    assert [(r.name, r.ok, r.error[-2000:]) for r in results] == [(n, True, "") for n in report.ORDER]
    index = (out / "README.md").read_text()
    for key in ("lcm_ref", "torch", "diffusers", "cpu", "gpu", "seed", "date"):
        assert f"| {key} |" in index
    for name in report.ORDER:
        page = (out / f"{name}.md").read_text()
        assert f"({name}.md)" in index
        assert "**Error**" not in page
        links = re.findall(r"\]\((figures/[^)]+\.png)\)", page)
        assert links, f"{name}: no figure"
        for link in links:
            assert (out / link).read_bytes()[:8] == PNG_MAGIC
    # every CSV a notebook's code names is written, except the GPU ones (*cuda*: made only where CUDA is)
    written = {p.name for p in (out / "data").glob("*.csv")}
    for name in report.ORDER:
        source = "\n".join(c.source for c in nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells)
        named = set(re.findall(r"[\w-]+\.csv", source))
        assert named, f"{name}: names no CSV"
        assert {n for n in named if "cuda" not in n} <= written, (name, sorted(named - written))
    assert not list(out.parent.glob(".reports-*"))


# ---------------------------------------------------------------------------------------------------------------
# The logic the notebooks show (lcm_ref.studies.behaviour, lcm_ref.studies.accuracy)
# ---------------------------------------------------------------------------------------------------------------

def test_other_implementations_selection():
    """The authors' stride selection and A1111's snapped linspace give docs/design.md §4's n = 4 schedules; TCD's grid is
    diffusers'; the comparison table checks diffusers live against the reference."""
    from lcm_ref import LCMConfig
    from lcm_ref.studies import behaviour as B
    cfg = LCMConfig()
    assert B.original_lcm_timesteps(cfg, 4) == [999, 759, 519, 279]
    assert B.a1111_timesteps(cfg, 4) == [999, 679, 339, 19]
    assert B.tcd_timesteps(cfg, 4)[0] == [999, 759, 499, 259]
    rows = B.selection_table(cfg, steps=(1, 4, 8))
    assert rows[2]["diffusers LCMScheduler (= lcm_ref)"] == [999, 879, 759, 639, 499, 379, 259, 139]


def test_inert_parameters_and_the_exception():
    """timestep_spacing / steps_offset / set_alpha_to_one leave every output bit-identical in the demo's runs, and
    set_alpha_to_one does change the output of a custom schedule with a negative timestep."""
    from lcm_ref.studies import behaviour as B
    rows = B.inert_parameters(prediction_types=("epsilon",))
    assert len(rows) == len(B.INERT_PARAMETERS) * len(B.INERT_CALLS)
    assert all(r["bit_identical"] for r in rows)
    m = B.set_alpha_to_one_matters()
    assert not m["bit_identical"] and m["max_abs_difference_of_prev_sample"] > 0


def test_bit_identical_sees_one_ulp():
    """bit_identical compares bits: one float32 ulp apart is different, NaN equals the same NaN."""
    import torch
    from lcm_ref.studies import behaviour as B
    a = torch.tensor([1.0, float("nan")])
    b = a.clone()
    b[0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    run = lambda x: B.Run([999], [(x, x)], None, [])    # noqa: E731
    assert B.bit_identical(run(a), run(a.clone()))
    assert not B.bit_identical(run(a), run(b))


def test_quirk_demos_run_live():
    """Each of the six quirks is demonstrated against the installed diffusers, and the strict profile refuses
    quirks 2-5 with a StrictError (quirk 1: it fixes num_inference_steps instead)."""
    from lcm_ref.studies import behaviour as B
    qs = B.quirks()
    assert [q.number for q in qs] == [1, 2, 3, 4, 5, 6]
    assert "num_inference_steps=2" in qs[0].strict and "prev_sample != denoised" in qs[0].diffusers
    assert all(q.strict.startswith("StrictError") for q in qs[1:5])
    assert "IndexError" in qs[3].diffusers and "[759, 499, 259, -1]" in qs[5].diffusers


def test_measure_step_measures_error():
    """measure_step scores the correctly rounded reference result ≤ 0.5 (one rounding to float32) and a mutant that
    re-noises to the wrong timestep far above the bound."""
    import numpy as np
    import lcm_ref.reference as ref
    from lcm_ref import LCMConfig
    from lcm_ref.studies import accuracy as A

    def rounded_reference(cfg, schedule, i, x, m, seed):
        z = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32).astype(np.float64)
        out = ref.step(cfg, m, int(schedule[i]), x, schedule=schedule, noise=z, step_index=i)
        return (out.prev_sample.astype(np.float32).astype(np.float64),
                out.denoised.astype(np.float32).astype(np.float64), z)

    def wrong_next_timestep(cfg, schedule, i, x, m, seed):
        prev, den, z = rounded_reference(cfg, schedule, i, x, m, seed)
        c, d = ref.noise_coefficients(cfg, int(schedule[i]))           # re-noise to t itself: off by one step
        return c * den + d * z, den, z

    cfg, grid = LCMConfig(), ref.timesteps(LCMConfig(), 4)
    good = A.measure_step(cfg, A.Impl("ref", "float32", rounded_reference), grid, 1, (1, 4, 8, 8), 0)
    # float64 reference rounded once to float32: |err| ≤ 2⁻²⁴·|v| ≤ 0.5·eps32·Σ|terms| since |v| ≤ Σ|terms|.
    assert good["scaled_denoised"] <= 0.5 and good["scaled_prev"] <= 0.5
    bad = A.measure_step(cfg, A.Impl("mutant", "float32", wrong_next_timestep), grid, 1, (1, 4, 8, 8), 0)
    assert bad["scaled_prev"] > 1e4


def test_reference_agrees_with_independent_mpmath():
    """The reference's step outputs are within docs/design.md §8's 4 scaled eps64 of the independent 60-digit
    lcm_ref.reference.exact.exact_step, and its ᾱ table within 1 ulp of exact_tables (which a naive float64 cumprod is not)."""
    from lcm_ref import LCMConfig
    from lcm_ref.studies import accuracy as A
    rows = A.reference_vs_mpmath(every=16, shape=(1, 2, 3, 3))
    assert max(max(r["scaled_denoised"], r["scaled_prev"]) for r in rows) <= 4
    u = A.table_ulps(LCMConfig())
    assert u["reference"].max() <= 1 and u["naive_float64"].max() > 1


def test_float32_c_out_reaches_one_where_the_closed_form_says():
    """Rounded to float32, c_out is exactly 1 once 1 − c_out ≈ σ²/(2u²) < 2⁻²⁵: for s = 10 from t = 2048/10 → 205
    (√(0.125·2²⁵) = 2048); float64 never reaches 1 on t < 1000 (σ²/(2u²) ≥ 1.25e-9 ≫ 2⁻⁵⁴)."""
    from lcm_ref.studies import accuracy as A
    r = A.first_t_c_out_is_one(10.0)
    assert r["exact_rounded_to_fp32"] == 205 and r["reference_fp64"] is None
    assert r["diffusers_fp32"] is not None and r["diffusers_fp32"] <= 205
