"""lcm_ref.studies.conformance: the version matrix's plan, driver, writer and reader, and the deviation
explanations, on a tiny fake set of JSON reports (no conform run: a fake release environment whose "python" copies a
prepared report, milliseconds per job); and the committed files of reports/data/conformance, the page
reports/conformance.md and docs/design.md §13.3 against each other: one run, one source for every number."""

import csv
import json
import stat
import textwrap
from pathlib import Path

import pytest

from lcm_ref.oracle.conform import schema as conformance_schema
from lcm_ref.oracle.adapters import TCD_CONCERNS
from lcm_ref.oracle.conform import ConcernResult, ConformanceReport
from lcm_ref.studies import conformance as C
from lcm_ref.studies import conformance_page as CP

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "reports" / "data" / "conformance"
PAGE = ROOT / "reports" / "conformance.md"
DESIGN = ROOT / "docs" / "design.md"


def fake_report(impl, dtype, verdicts, *, details=None, causes=None, refused=None, concerns=C.CONCERNS):
    rep = ConformanceReport(impl, dtype, "cpu", "float32", "diffusers", {c: 1 for c in concerns}, 30.0)
    for c in concerns:
        v = verdicts.get(c, "pass")
        rep.concerns.append(ConcernResult(c, v, (details or {}).get(c, "3 examples, 10 values compared"),
                                          failing_examples=1 if v == "fail" else 0,
                                          reproduce="replay(...)" if v == "fail" else None,
                                          likely_cause=(causes or {}).get(c), refused=(refused or {}).get(c, [])))
    rep.seconds = 12.5
    return rep


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "conformance"
    f.mkdir()
    old = fake_report(
        "lcm_ref.oracle.adapters:compat_LCMScheduler", "float16",
        {"config": "unsupported", "timesteps": "fail", "final_step": "fail", "noise": "fail",
         "previous_timestep": "unsupported", "state": "unsupported", "add_noise": "fail"},
        details={"timesteps": "set_timesteps(num_inference_steps=4): scheduler.timesteps = [999, 759, 519, 279], want "
                              "[999, 759, 499, 259]",
                 "final_step": "prev_sample at the last step 3 (t=279), against its denoised differs",
                 "noise": "step 0 (t=999): the noise is drawn in float32, want the sample dtype float16",
                 "add_noise": "add_noise differs from the reference beyond the budget"},
        causes={"timesteps": "selects origin[::-(L//n)][:n] (the authors' stride rule)",
                "final_step": "adds noise on the last step (diffusers 0.22 and the authors' pipeline did)"},
        refused={"config": ["the constructor refuses timestep_scaling=0.1 (NotImplementedError: ...)"],
                 "previous_timestep": ["no method previous_timestep"],
                 "state": ["no method set_begin_index (diffusers < 0.27)"]})
    mid = fake_report("diffusers:LCMScheduler", "float32", {"previous_timestep": "fail"},
                      details={"previous_timestep": "previous_timestep(999 as tensor) = 749, want 759"},
                      causes={"previous_timestep": "returns t − T//n, diffusers' formula before 0.32"})
    tcd = fake_report("diffusers:TCDScheduler", "float32", {}, concerns=TCD_CONCERNS)
    dropin = fake_report("lcm_ref.torch_impl:LCMScheduler", "float32", {})
    for name, rep in (("LCMScheduler-0.22.0_float16.json", old), ("LCMScheduler-0.24.0_float32.json", mid),
                      ("TCDScheduler-0.27.2_float32.json", tcd), ("lcm_ref-dropin-0.42.1_float32.json", dropin),
                      ("LCMScheduler-0.22.0_float32.json", mid)):
        (f / name).write_text(rep.to_json())
    (f / "run.json").write_text(json.dumps({"wall_s": 100.0, "jobs": 2, "cpus": 2, "cpu_seconds": 180.0,
                                            "cpu_makespan_s": 95.0, "load_average": [1.0, 1.0, 1.0],
                                            "results": [{"label": "LCMScheduler@0.24.0", "dtype": "float32",
                                                         "cpu_s": 20.0, "wall_s": 22.0, "adapter": None}]}))
    (f / "notes.json").write_text("{}")             # not a report: ignored
    return f


def test_plan_covers_the_matrix():
    jobs = C.plan()
    assert len(jobs) == 9 * 2 + 4 * 2 + 2
    assert {(j.kind, j.version) for j in jobs if j.kind == "tcd"} == {("tcd", v) for v in
                                                                      ("0.27.2", "0.31.0", "0.32.2", "0.42.1")}
    assert [j.version for j in jobs if j.kind == "dropin"] == ["0.42.1", "0.42.1"]
    assert jobs[0].version == "0.22.0"                     # the slowest first
    assert all(C.FILE_PATTERN.match(j.filename) for j in jobs)
    assert len({j.filename for j in jobs}) == len(jobs)


def test_makespan():
    assert C.makespan([3, 3, 2, 2, 2], 2) == 7
    assert C.makespan([10], 2) == 10 and C.makespan([], 2) == 0


def test_matrix_rows_order_and_cells(folder):
    rows = C.matrix_rows(folder)
    assert [(r["row"], r["sample_dtype"]) for r in rows] == [
        ("LCMScheduler@0.22.0", "float32"), ("LCMScheduler@0.22.0", "float16"), ("LCMScheduler@0.24.0", "float32"),
        ("TCDScheduler@0.27.2", "float32"), ("lcm_ref.torch_impl.LCMScheduler@0.1.0", "float32")]
    tcd = rows[3]
    assert tcd["denoised"] == tcd["final_step"] == C.NOT_APPLICABLE and tcd["timesteps"] == "pass"
    assert rows[1]["timesteps"] == "fail" and rows[1]["config"] == "unsupported"


def test_matrix_csv_round_trip(folder):
    path = C.write_matrix(folder)
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["row", "implementation", "version", "sample_dtype", "file", "status", "seconds", *C.CONCERNS]
    rows = C.load_matrix(folder)
    assert len(rows) == 5 and rows[0]["seconds"] == 12.5
    assert {r[c] for r in rows for c in C.CONCERNS} <= set(C.VERDICTS)
    table = C.verdict_table(rows)
    assert table[1]["timesteps"] == "FAIL" and table[3]["denoised"] == "n/a"
    assert C.verdict_table(rows, markdown=True)[1]["timesteps"] == "**FAIL**"


def test_matrix_csv_of_the_page_holds_plain_values(folder, tmp_path):
    """Protects issue 16's "CSVs hold plain values": conformance_matrix.csv (what the page writes from
    ``verdict_table``) has no markdown in any cell; the bold is the page's alone."""
    from lcm_ref.numerics import write_csv
    path = write_csv(C.verdict_table(C.load_matrix(folder)), tmp_path / "conformance_matrix.csv")
    cells = [v for row in csv.reader(path.open()) for v in row]
    assert "FAIL" in cells and not [v for v in cells if any(m in v for m in ("**", "`", "]("))]


def test_deviations_are_grouped_and_explained(folder):
    devs = {d["key"]: d for d in C.deviations(folder)}
    assert devs["stride_selection"]["rows"] == ["LCMScheduler@0.22.0 float16"]
    assert "#5836" in devs["stride_selection"]["upstream"]
    assert "#5681" in devs["final_step_noise"]["upstream"] and "#5681" in devs["noise_dtype"]["upstream"]
    assert "#5681" in devs["no_timestep_scaling"]["upstream"]
    assert devs["previous_timestep_formula"]["rows"] == ["LCMScheduler@0.22.0 float32", "LCMScheduler@0.24.0 float32"]
    assert "#9384" in devs["previous_timestep_formula"]["upstream"]
    assert "no_previous_timestep" in devs and "no_begin_index" in devs
    odd = devs["unexplained:lcm:add_noise:fail"]
    assert not odd["known"] and odd["rows"] == ["LCMScheduler@0.22.0 float16"]
    text = CP.deviations_markdown(list(devs.values()))
    assert "not a known deviation" in text and "LCMScheduler@0.22.0 (float16)" in text
    assert CP.deviation_rows(list(devs.values()))[0]["key"]


def test_page_without_reports_says_how_to_make_them_and_claims_nothing(tmp_path):
    """Protects the conformance page from a wheel (issue 16): with no reports it says so, gives the `lcm-ref
    conform` commands that make them (valid arguments, file names the page reads) with `make conformance` only as
    the checkout's way, and states no verdict ("No concern fails ..." is a claim about runs that exist)."""
    import argparse
    import shlex

    from lcm_ref.cli import conform as conform_cli
    assert CP.report_folder(tmp_path) in (None, C.default_out())
    text = CP.intro_markdown(None, [], {}) + "\n" + CP.deviations_markdown([], runs=0)
    assert "No concern fails" not in text and "no verdict" in text
    assert text.index("lcm-ref conform") < text.index("make conformance") and "In a checkout" in text
    commands = [shlex.split(line) for line in text.splitlines() if line.startswith("lcm-ref conform ")]
    assert len(commands) == len(C.DTYPES)
    for argv in commands:
        p = argparse.ArgumentParser()
        conform_cli.configure_parser(p)
        args = p.parse_args(argv[2:])
        assert C.FILE_PATTERN.match(Path(args.json).name) and Path(args.json).parent == Path(
            "reports/data/conformance") and args.json.endswith(f"_{args.dtype}.json")


def test_page_reads_reports_written_by_lcm_ref_conform_alone(folder, tmp_path):
    """Protects the way from `lcm-ref conform --json` to the page: a folder with reports and neither matrix.csv nor
    run.json is found, read as the matrix, and described as separate conform runs, not as one broken run."""
    data = tmp_path / "data"
    (data / "conformance").mkdir(parents=True)
    for name in ("LCMScheduler-0.24.0_float32.json", "LCMScheduler-0.22.0_float16.json"):
        (data / "conformance" / name).write_bytes((folder / name).read_bytes())
    found = CP.report_folder(data)
    assert found == data / "conformance"
    rows = C.load_matrix(found)
    assert [r["row"] for r in rows] == ["LCMScheduler@0.22.0", "LCMScheduler@0.24.0"]
    text = CP.intro_markdown(found, rows, C.run_info(found))
    assert "2 runs" in text and "separate `lcm-ref conform` runs" in text and "do not come from one run" not in text
    assert CP.deviations_markdown([], runs=2) == "No concern fails or is unsupported in any of the 2 runs."


def test_page_helpers(folder, tmp_path):
    rows = C.load_matrix(C.write_matrix(folder).parent)
    info = C.run_info(folder)
    assert "5 runs" in CP.summary_markdown(rows, info) and "95 s of wall time on 2" in CP.summary_markdown(rows, info)
    timing = CP.timing_rows(rows, info)
    assert timing[2]["job CPU s"] == 20.0 and timing[0]["job CPU s"] is None
    assert CP.report_folder(folder.parent) == folder
    assert CP.report_folder(tmp_path / "nowhere") in (None, C.default_out())
    judged = {r["concern"]: r["judged for TCD"] for r in CP.tcd_rows()}
    assert judged["noise"] and judged["tables"] and not judged["denoised"] and not judged["final_step"]


def test_plot_matrix(folder):
    import matplotlib
    matplotlib.use("Agg")
    fig = CP.plot_matrix(C.matrix_rows(folder))
    assert len(fig.axes) == 1


@pytest.mark.skipif(not (COMMITTED / "matrix.csv").is_file(), reason="no committed matrix")
def test_committed_reports_are_valid_and_consistent():
    """The committed reports follow conformance.schema.json; matrix.csv is what their verdicts say; every fail or
    unsupported cell is a known deviation; lcm_ref's drop-in and the newest diffusers have no fail."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = conformance_schema()
    for p in COMMITTED.glob("*.json"):
        if C.FILE_PATTERN.match(p.name):
            jsonschema.validate(json.loads(p.read_text()), schema)
    def cells(rows):
        return [(r["row"], r["sample_dtype"], r["file"], *(r[c] for c in C.CONCERNS)) for r in rows]

    assert cells(C.load_matrix(COMMITTED)) == cells(C.matrix_rows(COMMITTED))
    assert all(d["known"] for d in C.deviations(COMMITTED)), [d["key"] for d in C.deviations(COMMITTED)]
    rows = C.load_matrix(COMMITTED)
    newest = max((r["version"] for r in rows if r["row"].startswith("LCMScheduler")), key=C.version_tuple)
    for r in rows:
        if r["row"].startswith("lcm_ref") or r["row"] == f"LCMScheduler@{newest}":
            assert "fail" not in [r[c] for c in C.CONCERNS], r



def test_concerns_are_conforms():
    """The matrix's columns are conform's concerns, in conform's order (repeated there so that reading needs no
    torch): a concern added to conform must be added to the matrix."""
    from lcm_ref.oracle.conform import CONCERNS, VERDICTS
    assert C.CONCERNS == CONCERNS
    assert set(VERDICTS) | {C.NOT_APPLICABLE} == set(C.VERDICTS)


def fake_environment(tmp_path, reports: dict, version="9.9.9"):
    """A release environment ``<venvs>/diffusers-<version>`` whose python, called as the driver calls a job, copies
    the prepared report of the job's kind (``reports``: kind -> ConformanceReport) to --json and prints the job's
    metadata line, as ``run_job`` does."""
    venvs = tmp_path / "venvs"
    bin_ = venvs / f"diffusers-{version}" / "bin"
    bin_.mkdir(parents=True)
    for kind, rep in reports.items():
        # a real job's report names the implementation's package and version (conform: implementation_info)
        rep.implementation_info = ({"package": "lcm_ref", "version": rep.lcm_ref_version} if kind == "dropin"
                                   else {"package": "diffusers", "version": version})
        (bin_ / f"{kind}.json").write_text(rep.to_json())
    meta = {kind: json.dumps({"kind": kind, "diffusers": version, "torch": "2.13.0", "hypothesis": "6.0",
                              "implementation": rep.implementation, "adapter": None, "cpu_s": 2.5,
                              "implementation_package": "lcm_ref" if kind == "dropin" else "diffusers",
                              "implementation_version": rep.lcm_ref_version if kind == "dropin" else version})
            for kind, rep in reports.items()}
    cases = "\n".join(f"  {kind}) echo '{line}';;" for kind, line in meta.items())
    script = bin_ / "python"
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        # called as: python -m lcm_ref.studies.conformance job --kind K --dtype D --json PATH
        while [ $# -gt 0 ]; do
          case $1 in --kind) kind=$2;; --json) json=$2;; esac
          shift
        done
        cp "$(dirname "$0")/$kind.json" "$json"
        case $kind in
        """) + cases + "\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return venvs


def test_run_matrix_leaves_one_run(tmp_path, monkeypatch):
    """The driver makes its folder hold exactly one run: a report of an earlier run is removed, run.json names each
    report by its SHA-256 with the verdicts, status and seconds read back from the file, matrix.csv is built from
    the reports, and ``consistency`` finds nothing; then it finds each kind of tampering. The folder is given
    relative, as make conformance gives it: the jobs, which run in another directory, once wrote their reports
    there, so the committed reports stayed those of an older run while run.json was rewritten."""
    reports = {"lcm": fake_report("diffusers:LCMScheduler", "float32", {"previous_timestep": "fail"}),
               "tcd": fake_report("diffusers:TCDScheduler", "float32", {"errors": "fail"}, concerns=TCD_CONCERNS),
               "dropin": fake_report("lcm_ref.torch_impl:LCMScheduler", "float32", {})}
    venvs = fake_environment(tmp_path, reports)
    out = tmp_path / "out"
    out.mkdir()
    (out / "LCMScheduler-0.22.0_float32.json").write_text(reports["lcm"].to_json())      # an earlier run's
    monkeypatch.chdir(tmp_path)
    info = C.run_matrix(venvs, "out", versions=("9.9.9",), dtypes=("float32",), jobs=2, progress=False)
    assert [m["ok"] for m in info["results"]] == [True, True, True], info["results"]
    assert sorted(p.name for p in out.iterdir()) == [
        "LCMScheduler-9.9.9_float32.json", "TCDScheduler-9.9.9_float32.json", "lcm_ref-dropin-9.9.9_float32.json",
        "matrix.csv", "run.json"]
    assert C.consistency(out) == []
    tcd = next(m for m in info["results"] if m["kind"] == "tcd")
    assert tcd["verdicts"]["errors"] == "fail" and tcd["seconds"] == 12.5
    assert tcd["sha256"] == C.file_digest(out / "TCDScheduler-9.9.9_float32.json")
    assert C.run_info(out)["results"] == info["results"]
    # each way a folder stops being one run is named
    rep = json.loads((out / "TCDScheduler-9.9.9_float32.json").read_text())
    rep["concerns"][-2]["verdict"] = "pass"                          # errors: the verdict run.json does not say
    (out / "TCDScheduler-9.9.9_float32.json").write_text(json.dumps(rep))
    (out / "LCMScheduler-0.21.0_float32.json").write_text(reports["lcm"].to_json())
    (out / "lcm_ref-dropin-9.9.9_float32.json").unlink()
    problems = "\n".join(C.consistency(out))
    assert "TCDScheduler-9.9.9_float32.json: run.json says sha256" in problems
    assert "TCDScheduler-9.9.9_float32.json: run.json says verdicts" in problems
    assert "LCMScheduler-0.21.0_float32.json: not in run.json" in problems
    assert "lcm_ref-dropin-9.9.9_float32.json: in run.json, but no such file" in problems
    assert "matrix.csv: not what the reports say" in problems


def test_release_table_and_design_table(folder, tmp_path):
    """The short table of the page and of docs/design.md §13.3: consecutive versions with the same deviations
    merge, a deviation of one dtype says so, a run without any says none; write_design replaces only the table."""
    table = {r["release"]: r["deviations"] for r in C.release_table(folder)}
    assert list(table) == ["LCMScheduler 0.22.0", "LCMScheduler 0.24.0", "TCDScheduler 0.27.2",
                           "lcm_ref.torch_impl.LCMScheduler 0.1.0"]
    assert table["LCMScheduler 0.24.0"] == "`previous_timestep` returns t − T//n (`previous_timestep`: fail)"
    assert "Stride selection of the timesteps (`timesteps`: fail, float16 only)" in table["LCMScheduler 0.22.0"]
    assert "add_noise: not a known deviation (`add_noise`: fail, float16 only)" in table["LCMScheduler 0.22.0"]
    assert table["TCDScheduler 0.27.2"] == table["lcm_ref.torch_impl.LCMScheduler 0.1.0"] == "none"
    doc = tmp_path / "design.md"
    doc.write_text(f"# x\n\ntext before\n{C.DESIGN_BEGIN}\n| old |\n{C.DESIGN_END}\ntext after\n")
    assert C.write_design(doc, folder) and not C.write_design(doc, folder)
    text = doc.read_text()
    assert text.startswith("# x\n\ntext before\n") and text.endswith("\ntext after\n")
    assert C.design_section(text) == C.design_table(folder) and "| old |" not in text


def test_tcd_errors_deviation_is_known(tmp_path):
    """TCD's `errors` failure (an explicit original_inference_steps > num_train_timesteps accepted) is a known
    deviation with its explanation, not an unexplained cell."""
    f = tmp_path / "c"
    f.mkdir()
    detail = ("set_timesteps(num_inference_steps=1, original_inference_steps=1032): the reference raises ValueError: "
              "original_inference_steps=1032 must be <= num_train_timesteps=1000, the implementation returns normally")
    rep = fake_report("diffusers:TCDScheduler", "float32", {"errors": "fail"}, details={"errors": detail},
                      concerns=TCD_CONCERNS)
    (f / "TCDScheduler-0.27.2_float32.json").write_text(rep.to_json())
    (d,) = C.deviations(f)
    assert d["key"] == "tcd_original_steps_unchecked" and d["known"] and "default path" in d["what"]


@pytest.mark.skipif(not (COMMITTED / "run.json").is_file(), reason="no committed matrix")
def test_committed_files_come_from_one_run():
    """run.json, the per-run reports and matrix.csv of reports/data/conformance agree (``consistency``: each report
    is the one run.json names by SHA-256, with the same verdicts, status, judged counts, seconds and versions); the
    page reports/conformance.md shows their summary, matrix, short table and timings; docs/design.md §13.3's table
    is the one generated from them. A partial rerun (run.json alone committed, as once happened) fails here."""
    from lcm_ref.numerics import markdown_table
    assert C.consistency(COMMITTED) == []
    rows, info = C.load_matrix(COMMITTED), C.run_info(COMMITTED)
    page = PAGE.read_text()
    for part, text in (("summary", CP.summary_markdown(rows, info)),
                       ("matrix", markdown_table(C.verdict_table(rows, markdown=True))),
                       ("short table", markdown_table(C.release_table(COMMITTED))),
                       ("timings and versions", markdown_table(CP.timing_rows(rows, info)))):
        assert text.strip() in page, f"reports/conformance.md: its {part} is not the committed files' (make report)"
    assert "\n**These files do not come from one run**" not in page       # the page's own check (the code says it)
    design = C.design_section(DESIGN.read_text())
    assert design == C.design_table(COMMITTED), \
        "docs/design.md §13.3: python -m lcm_ref.studies.conformance design --write"
