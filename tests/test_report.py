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


def test_first_run_whose_every_notebook_fails_reports_the_failures(tmp_path, monkeypatch):
    """A first run (no previous reports) in which every notebook fails returns the failures with their messages and
    writes the index, instead of stopping on the empty table of successful runs (it raised "rows=[] is not
    allowed" when a kernel failed to start on a loaded machine)."""
    nbs = fake_notebooks(tmp_path / "nbs", ["scheduler_behaviour"])

    def failing_execute(path, workdir, timeout, progress, env):
        raise RuntimeError("Kernel didn't respond in 60 seconds")
    monkeypatch.setattr(report, "_execute", failing_execute)
    results = report.run(tmp_path / "reports", notebooks=nbs, quiet=True)
    assert [(r.name, r.ok) for r in results] == [("scheduler_behaviour", False)]
    assert "Kernel didn't respond" in results[0].error
    assert (tmp_path / "reports" / "README.md").is_file()


def test_report_written_deep_in_a_tree_runs_its_kernel(tmp_path):
    """Protects the kernel's IPC sockets from the output path's length: with the sockets in the work folder, a report
    folder whose path makes them longer than a Unix socket's 107 bytes failed in 0.2 s and then hung (it did, for
    tests/test_guide.py under pytest-xdist's longer temporary paths)."""
    nbs = fake_notebooks(tmp_path / "nbs", ["scheduler_behaviour"])
    out = tmp_path / ("deep-" * 20) / "my_reports"
    assert len(str(out)) > 107
    (result,) = report.run(out, notebooks=nbs, quiet=True, timeout=120)
    assert result.ok, result.error
    assert (out / "scheduler_behaviour.md").is_file()


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


# ---------------------------------------------------------------------------------------------------------------
# Format limits, figures, benchmark notes, reproducibility (issue 10, "reports that tell the truth")
# ---------------------------------------------------------------------------------------------------------------

def test_overflow_to_the_correctly_rounded_inf_is_not_an_error():
    """Where the exact value is beyond float16's range, an implementation that returns the correctly rounded ±inf
    is counted as an overflow and scores 0; one that returns inf where the exact value fits is a non-finite error;
    a subnormal result's 2⁻²⁵ rounding counts in the all-element max but not in the normal-range one."""
    import numpy as np
    import lcm_ref.reference as ref
    from lcm_ref import LCMConfig
    from lcm_ref.studies import accuracy as A
    cfg = LCMConfig(beta_schedule="squaredcos_cap_v2")
    grid = ref.timesteps(LCMConfig(), 50)

    def exact_then_float16(cfg, schedule, i, x, m, seed):
        z = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float16).astype(np.float64)
        out = ref.step(cfg, m, int(schedule[i]), x, schedule=schedule, noise=z, step_index=i)
        return A.round_to(out.prev_sample, "float16"), A.round_to(out.denoised, "float16"), z

    def inf_everywhere(cfg, schedule, i, x, m, seed):
        prev, den, z = exact_then_float16(cfg, schedule, i, x, m, seed)
        return prev, np.full_like(den, np.inf), z

    good = A.measure_step(cfg, A.Impl("rounded", "float16", exact_then_float16), grid, 0, (2, 4, 16, 16), 0)
    assert good["overflow"] > 0 and good["nonfinite"] == 0
    assert good["scaled_denoised_normal"] <= 0.5 and np.isfinite(good["scaled_denoised"])
    bad = A.measure_step(cfg, A.Impl("inf", "float16", inf_everywhere), grid, 0, (2, 4, 16, 16), 0)
    assert bad["nonfinite"] > 0 and bad["scaled_denoised"] == np.inf
    assert A.round_to([65519.99, 65520.0, 1e-8], "float16").tolist() == [65504.0, np.inf, 0.0]
    assert A.round_to([2.0 ** -30], "float16")[0] == 0.0 and A.smallest_normal("float16") == 2.0 ** -14


def test_summaries_handle_results_written_before_the_overflow_column():
    """An older GPU file (no overflow / normal-range columns) still summarizes; its non-finite count is matched
    against this run's overflow count on the same inputs."""
    from lcm_ref.studies import accuracy as A
    old = [dict(impl="TorchLCM", dtype="float16", beta_schedule="squaredcos_cap_v2", prediction_type="epsilon", t=999,
                scaled_denoised=float("inf"), scaled_prev=0.4, nonfinite=7, error="")]
    new = [dict(old[0], scaled_denoised=0.49, scaled_denoised_normal=0.49, scaled_prev_normal=0.4, overflow=7,
                nonfinite=0)]
    (g,) = A.summarize(old)
    assert g["overflow"] == "" and g["max_normal_range"] == "" and g["nonfinite"] == 7
    (g,) = A.summarize(new)
    assert g["overflow"] == 7 and g["max_normal_range"] == 0.49
    assert "same set of overflow elements" in A.gpu_overflow_note(new, old)
    assert "does not match" in A.gpu_overflow_note([dict(new[0], overflow=6)], old)


def _figure(fn, *args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = fn(*args)
    fig.canvas.draw()
    plt.close(fig)
    return fig


def test_analog_figures_sort_legends_numerically_and_tick_counts_at_integers():
    """Legends list k = 1, 5, 10, 20, 50 in that order; step and iteration axes carry integer ticks only."""
    from lcm_ref.studies import analogs as an
    ks = [dict(skipping_step=k, iteration=i, fd=0.1 / (1 + i + k), w2=0.1, paired_rms=0.1, paired_median=0.1)
          for k in (1, 10, 20, 5, 50) for i in (0, 150, 300)]
    fig = _figure(an.plot_skipping_step, ks)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [f"k = {k}" for k in (1, 5, 10, 20, 50)]
    sp = [dict(spacing=s, original_inference_steps=50, method="lcm_exact", steps=n, fd=0.01 * n)
          for s in ("lcm", "trailing") for n in (1, 2, 4)]
    t1 = [dict(method=m, steps=n, fd=1.0 / n, w2=1.0 / n) for m in ("ddim", "lcm_exact") for n in (1, 2, 4, 8)]
    for fig in (_figure(an.plot_spacing, sp), _figure(an.plot_table1, t1), _figure(an.plot_skipping_step, ks)):
        for ax in fig.axes:
            ticks = [v for v in ax.get_xticks() if ax.get_xlim()[0] <= v <= ax.get_xlim()[1]]
            assert ticks and all(float(v).is_integer() for v in ticks), ticks
    assert [t.get_text() for t in _figure(an.plot_table1, t1).axes[0].get_xticklabels()] == ["1", "2", "4", "8"]


def test_scaling_sweep_figure_shows_the_float32_transitions():
    """The main panel ends near 10⁴⁰ (the decades up to 10³⁰⁰ go to a narrow second panel) and marks both float32
    overflows — u² near s = 1.8e16, u near 3.4e35 for t = 999 — as bands, with their values on a top axis."""
    import math
    from lcm_ref.studies import accuracy as A
    sweep = [dict(timestep_scaling=10.0 ** e, impl=i, dtype=d, max_scaled_denoised=1.0, error="")
             for e in (-3, 0, 17, 38, 300) for i, d in (("diffusers", "float32"), ("TorchLCM", "float16"))]
    fig = _figure(A.plot_scaling_sweep, sweep)
    main = fig.axes[0]
    assert main.get_xlim()[1] < 50 and fig.axes[1].get_xlim()[1] > 300
    lo = {name: math.log10(v[0]) for name, v in A.float32_overflow_scalings([999, 139]).items()}
    assert [round(v, 1) for v in lo.values()] == [16.3, 35.5]
    labels = [t.get_text() for t in main.get_legend().get_texts()]
    assert sum("overflows" in t for t in labels) == 2
    (top,) = main.child_axes                      # the secondary x axis on top
    assert [t.get_text() for t in top.get_xticklabels()] == ["s = 1.8e+16", "s = 3.4e+35"]


def test_float16_and_bfloat16_are_drawn_apart():
    """The accuracy figure distinguishes every implementation by marker and dash, and shifts float16 / bfloat16
    apart, so a line exactly under another stays visible."""
    from lcm_ref.studies import accuracy as A
    f16, bf16 = A.IMPL_STYLES[("TorchLCM", "float16")], A.IMPL_STYLES[("TorchLCM", "bfloat16")]
    assert f16["marker"] != bf16["marker"] and f16["ls"] != bf16["ls"] and f16["dx"] != bf16["dx"]
    styles = {(s["marker"], s["ls"]) for s in A.IMPL_STYLES.values()}
    assert len(styles) == len(A.IMPL_STYLES)


def test_benchmark_notes_say_why_a_target_is_missed():
    """Every unmet target gets a reason computed from the rows: a speedup ceiling below the target, time besides
    the draw, or a copy kernel that cannot reach the roofline target either; met rows keep their note as is."""
    from lcm_ref.studies import bench
    rows = [
        dict(benchmark="step, noise drawn inside", shape="s", ours_us=52.0, diffusers_us=229.0, speedup=4.4,
             limit="randn alone", limit_us=10.0, ratio_to_limit=5.2, met="no", note="ceiling"),
        dict(benchmark="step, noise given", shape="s", ours_us=39.0, diffusers_us=207.0, speedup=5.3,
             limit="one pass x + b*y", limit_us=7.0, ratio_to_limit=5.6, met="yes", note=""),
        dict(benchmark="per-sample timesteps, B=64, noise given", shape="b", ours_us=3000.0, diffusers_us=3450.0,
             speedup=1.15, limit="one pass x + b*y", limit_us=400.0, met="no", note=""),
        dict(benchmark="fp16 step vs memory roofline, fused, CUDA graph", shape="r", roofline_pct=42.8,
             limit="5 MiB at copy bandwidth 4140 GB/s", met="no", note=""),
        dict(benchmark="same-bytes copy kernel (practical ceiling), CUDA graph", shape="r", roofline_pct=40.5,
             met="", note=""),
    ]
    out = bench.annotate(rows)
    assert out[0]["note"].startswith("ceiling; 5.20× randn > 1.3") and "39 µs" in out[0]["note"]
    assert out[1]["note"] == ""
    assert "not reachable on this machine" in out[2]["note"] and "8.62×" in out[2]["note"]
    assert "40.5%" in out[3]["note"] and "not reachable" in out[3]["note"]
    assert bench.annotate(out) == out
    assert all(r["note"] for r in out if r["met"] == "no")


def test_benchmark_device_names_the_threads_it_ran_with():
    import torch
    from lcm_ref.studies import bench
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert bench.device_name("cpu").endswith(", 1 intra-op thread")
    finally:
        torch.set_num_threads(saved)


def test_reproducibility_checker(tmp_path):
    """compare() passes a copy and differences within each family's tolerance, and flags one beyond it; every CSV
    the reports write belongs to a family."""
    import shutil
    from lcm_ref.studies import reproducibility as R
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "table1_analog.csv").write_text("method,steps,fd,w2\nddim_lcm_timesteps,2,0.5020389012,0.5\n"
                                         "lcm_student,2,0.0059,0.088\nlcm_exact,2,0.00175,0.094\n")
    (a / "behaviour_selection.csv").write_text("n,x\n4,999 759\n")
    shutil.copytree(a, b)
    assert R.compare(a, b) == []
    (b / "table1_analog.csv").write_text("method,steps,fd,w2\nddim_lcm_timesteps,2,0.5020387762,0.5\n"
                                         "lcm_student,2,0.00591,0.088\nlcm_exact,2,0.00175000001,0.094\n")
    bad = R.compare(a, b)
    assert [(d["row"], d["family"]) for d in bad] == [(4, "testbed, float64")]
    (b / "behaviour_selection.csv").write_text("n,x\n4,999 758\n")
    assert any(d["file"] == "behaviour_selection.csv" for d in R.compare(a, b))
    data = Path(report.ROOT) / "reports" / "data"
    unlisted = [p.name for p in data.glob("*.csv") if "cuda" not in p.name and p.name.startswith(
        ("accuracy", "behaviour", "bench", "scaling", "table1", "skipping", "guidance", "spacing", "endpoint",
         "timestep", "report")) and R.family_of(p.name, {}) is None]
    assert not unlisted
    assert "## Reproducibility" in R.index_markdown()


def test_tracked_reports_are_not_ignored():
    """reports/ is generated and committed: no tracked file under it matches a .gitignore pattern."""
    import shutil
    import subprocess
    if shutil.which("git") is None or not (Path(report.ROOT) / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(["git", "ls-files", "reports"], cwd=report.ROOT, capture_output=True, text=True).stdout
    assert tracked.split()
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=report.ROOT, input=tracked,
                             capture_output=True, text=True).stdout
    assert ignored.split() == []
