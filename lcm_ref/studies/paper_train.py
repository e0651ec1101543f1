"""Training the learned testbed's networks (``lcm-ref paper train``, ``make paper``): the classifier, the teacher
and every distillation run of ``lcm_ref.testbed.digits``, resumable (a run's state is saved every few hundred
iterations in the work folder and picked up again), single-threaded torch with fixed seeds, float32 on CPU or
CUDA. Everything is written under the current directory unless told otherwise (``OUT_DIR``, never into the installed
package): the weights to ``./paper-train/weights/`` (safetensors + a JSON record each, with the ``usage`` facts of
``digits.models.usage``), the curves of every run and the wall times to ``./paper-train/runs/``, the resumable run
states to ``./paper-train/work/``. ``make paper`` in a checkout names the package's folders instead
(``lcm_ref/testbed/digits/weights/`` and ``runs/``, the committed ones) and a copy of the CSVs for ``reports/data``.
The evaluation is ``lcm_ref.studies.paper`` (the committed weights by default; ``lcm-ref report --weights DIR --runs
DIR`` evaluates a folder trained here).

Every distillation run uses ``RECIPE`` (docs/design.md §11.1 on which of its choices mattered, measured).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import LCMRefError
from ..numerics import csv_text, read_csv, write_atomic, write_csv
from ..testbed.digits import checkpoint as ck
from ..testbed.digits import classifier as clf
from ..testbed.digits import data, lcd, sampling
from ..testbed.digits import teacher as tch
from ..testbed.digits.models import ROLES, WEIGHT_FILES, usage
from .paper import CEILING_STEPS, EVAL_SEED, KS, OMEGA, PACKAGE, balanced_labels, guidance_transfer, pixels, \
    skipping_rows

__all__ = ["Grid", "GRIDS", "STAGES", "EXTRA_SEEDS", "RECIPE", "OUT_DIR", "train"]

#: where ``train`` writes by default, relative to the current directory: weights/, runs/ and work/ under it
OUT_DIR = "paper-train"

#: the distillation recipe of every run (``lcd.distill`` keywords): see docs/design.md §11.1
RECIPE = dict(guidance_dim=lcd.GUIDANCE_DIM, cond_init="zero", lr=3e-4, warmup=50, weight_decay=0.0, loss="l2",
              loss_space="eps", ema_decay=0.95)


# ---------------------------------------------------------------------------------------------------------------
# Training grids
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """Sizes of one training grid. ``fig3_iterations`` is where the CPU grid is reduced."""
    name: str
    classifier_epochs: int = 40
    teacher_iterations: int = 3000
    teacher_batch: int = 128
    student_iterations: int = 20000         # the main student (45 min on one thread of the shared 2-core CPU)
    scaling_iterations: int = 20000         # the timestep_scaling students (as long as the main one)
    student_batch: int = 64
    fig3_iterations: int = 2000             # every (k, solver) run of Fig. 3
    eval_every: int = 100                   # Fig. 3 curves: 4-step FD every this many iterations
    main_eval_every: int = 500              # the main student's curve
    n_eval: int = 300                       # samples per evaluation along a run


#: "full": Fig. 3 runs of 2,000 iterations; "cpu": cut to 1,000 (their curves are the first half of the full ones:
#: the distillation's learning rate is constant after the warm-up, nothing depends on the length).
GRIDS = {"full": Grid("full"), "cpu": Grid("cpu", fig3_iterations=1000)}
STAGES = ("classifier", "teacher", "student", "student_seeds", "scaling", "skipping")
#: the main setting's further training seeds (stage "student_seeds"): name in ``WEIGHT_FILES`` → seed
EXTRA_SEEDS = {"student_seed1": 1}


def _run_name(solver, k, s, iterations):
    return f"lcd_{solver}_k{k}_s{s:g}_it{iterations}"


def _git_commit():
    """The checkout's commit, with "+uncommitted" when tracked or new files under lcm_ref/ differ from it."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=PACKAGE, capture_output=True, text=True,  # noqa: E731
                                        timeout=10).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD") or "unknown"
        dirty = run("status", "--porcelain", "--", str(PACKAGE.parent))
        return commit + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _eval_fn(classifier, freal, fteacher, *, num_ddim_timesteps, timestep_scaling, n_eval, n_boot, device):
    """4-step LCM samples at ω = OMEGA from a fixed seed (the same for every run and iteration): FD to the test
    split with its interval (``fd``), FD to the teacher's own samples at the same ω (``fd_teacher``: DDIM with
    ``CEILING_STEPS`` steps from the same x_T, the distribution distillation aims at) with its interval, and the
    class score; and the guidance transfer (``omega_move``, ``omega_align``: ``paper.guidance_transfer`` of the
    4-step samples at ω = 2 and 14 against the teacher's DDIM-50 pair, ``fteacher["pair"]``)."""
    labels = balanced_labels(n_eval)
    lo_w, hi_w = lcd.OMEGA_RANGE

    def fn(student):
        run = lambda w: sampling.lcm_sample(student, labels, w, 4, seed=EVAL_SEED,  # noqa: E731
                                            timestep_scaling=timestep_scaling,
                                            original_inference_steps=num_ddim_timesteps, device=device)
        images = run(OMEGA)
        f, p = clf.features(classifier, images), pixels(images)
        fd = clf.bootstrap_fd(f, freal, n_boot=n_boot)
        ft = clf.bootstrap_fd(f, fteacher["features"], n_boot=n_boot)
        fp = clf.bootstrap_fd(p, fteacher["pixels"], n_boot=n_boot)
        cs = clf.class_probability(classifier, images, labels).mean()
        move = guidance_transfer(run(lo_w), run(hi_w), *fteacher["pair"])
        return {"fd": fd["fd"], "fd_lo": fd["lo"], "fd_hi": fd["hi"], "fd_teacher": ft["fd"],
                "fd_teacher_lo": ft["lo"], "fd_teacher_hi": ft["hi"], "fd_teacher_pix": fp["fd"],
                "fd_teacher_pix_lo": fp["lo"], "fd_teacher_pix_hi": fp["hi"], "class_score": float(cs),
                "omega_move": move["move"], "omega_align": move["align"]}
    return fn


class _Trainer:
    def __init__(self, *, grid: Grid, device, work: Path, weights: Path, runs: Path, data_out: Path | None,
                 force: bool, progress: bool, command: str, log=print):
        self.grid, self.device, self.work, self.weights, self.runs = grid, torch.device(device), work, weights, runs
        self.data_out, self.force, self.progress, self.command, self.log = data_out, force, progress, command, log
        self.work.mkdir(parents=True, exist_ok=True)

    # bookkeeping --------------------------------------------------------------------------------------------
    def _record(self, seed, **extra):
        import diffusers
        return {"command": self.command, "seed": seed, "device": str(self.device), "torch": torch.__version__,
                "diffusers": diffusers.__version__, "torch_threads": torch.get_num_threads(),
                "git": _git_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "platform": platform.platform(), "grid": self.grid.name, **extra}

    def _times(self, row):
        path = self.runs / "training.csv"
        rows = [r for r in read_csv(path) if r["name"] != row["name"]] if path.is_file() else []
        rows.append(row)
        write_atomic(path, csv_text(rows).encode())
        if self.data_out:
            write_csv(rows, Path(self.data_out) / "digits_training.csv")

    def _curves(self, name, study, rows):
        path = self.runs / "lcd_runs.csv"
        old = [r for r in read_csv(path) if r["run"] != name] if path.is_file() else []
        columns = list(dict.fromkeys(k for r in old + rows for k in r))     # older runs lack newer columns
        allrows = [{c: r.get(c, "") for c in columns} for r in old + rows]
        write_atomic(path, csv_text(allrows).encode())
        if self.data_out:
            write_csv(allrows, Path(self.data_out) / "digits_lcd_runs.csv")
            sk = skipping_rows(allrows)
            if sk:
                write_csv(sk, Path(self.data_out) / "digits_skipping_step.csv")

    def _done(self, path, name):
        if self.force or not Path(path).is_file():
            return False
        timing = self.runs / "training.csv"
        if timing.is_file() and any(r["name"] == name for r in read_csv(timing)):
            self.log(f"{name}: done ({path.name if hasattr(path, 'name') else path}); --force to redo")
            return True
        return False

    def _run_resumable(self, name, fn):
        """Run ``fn(resume, checkpoint_fn)`` with the state in work/<name>.pt; returns (state, seconds)."""
        state_path = self.work / f"{name}.pt"
        resume = None if self.force else ck.load_state(state_path)
        spent = float(resume["extra"].get("seconds", 0.0)) if resume else 0.0
        if resume:
            self.log(f"{name}: resuming at iteration {resume['iteration']}")
        t0 = time.perf_counter()

        def checkpoint_fn(st):
            st.extra["seconds"] = spent + time.perf_counter() - t0
            ck.save_state(state_path, st.state_dict())
        st = fn(resume, checkpoint_fn)
        return st, float(st.extra.get("seconds", spent + time.perf_counter() - t0))

    # stages -------------------------------------------------------------------------------------------------
    def classifier(self):
        path = self.weights / WEIGHT_FILES["classifier"]
        if self._done(path, "classifier"):
            return ck.load(path, self.device)[0]
        t0 = time.perf_counter()
        model, losses = clf.train_classifier(data.load("train"), epochs=self.grid.classifier_epochs,
                                             seed=clf.CLASSIFIER_SEED, progress=self.progress, device=self.device)
        sec = time.perf_counter() - t0
        acc = clf.accuracy(model, data.load("test"))
        ck.save(path, model, self._record(clf.CLASSIFIER_SEED, epochs=self.grid.classifier_epochs,
                                          held_out_accuracy=acc, final_loss=losses[-1], seconds=round(sec, 1)))
        self._times({"name": "classifier", "stage": "classifier", "iterations": self.grid.classifier_epochs,
                     "batch_size": 64, "seconds": round(sec, 1), "device": str(self.device),
                     "torch_threads": torch.get_num_threads(), "grid": self.grid.name})
        self.log(f"classifier: held-out accuracy {acc:.4f} ({sec:.0f} s)")
        return model.eval()

    def teacher(self):
        path = self.weights / WEIGHT_FILES["teacher"]
        if self._done(path, "teacher"):
            return ck.load(path, self.device)[0]
        g = self.grid
        st, sec = self._run_resumable("teacher", lambda resume, cfn: tch.train_teacher(
            data.load("train"), iterations=g.teacher_iterations, batch_size=g.teacher_batch, seed=tch.TEACHER_SEED,
            device=self.device, progress=self.progress, resume=resume, checkpoint_fn=cfn))
        ck.save(path, st.ema, self._record(tch.TEACHER_SEED, iterations=g.teacher_iterations,
                                           batch_size=g.teacher_batch, p_uncond=0.1, ema_decay=0.999,
                                           final_loss_mean_100=float(np.mean(st.losses[-100:])),
                                           seconds=round(sec, 1), schedule=tch.SCHEDULE,
                                           usage=usage(ROLES["teacher"])))
        self._times({"name": "teacher", "stage": "teacher", "iterations": g.teacher_iterations,
                     "batch_size": g.teacher_batch, "seconds": round(sec, 1), "device": str(self.device),
                     "torch_threads": torch.get_num_threads(), "grid": g.name})
        self.log(f"teacher: {g.teacher_iterations} iterations ({sec:.0f} s)")
        return st.ema.eval()

    def teacher_features(self, teacher, classifier):
        """The teacher's DDIM-50 samples from the evaluations' seed, computed once: features at ω = OMEGA and the
        images at the ends of the training range (the guidance-transfer reference)."""
        if getattr(self, "_fteacher", None) is None:
            run = lambda w: sampling.teacher_sample(teacher, balanced_labels(self.grid.n_eval), w,  # noqa: E731
                                                    CEILING_STEPS, "ddim", seed=EVAL_SEED, device=self.device)
            images = run(OMEGA)
            self._fteacher = {"features": clf.features(classifier, images), "pixels": pixels(images),
                              "pair": (run(lcd.OMEGA_RANGE[0]), run(lcd.OMEGA_RANGE[1]))}
        return self._fteacher

    def lcd_run(self, teacher, classifier, freal, *, study, solver, k, s, iterations, weight_file=None,
                role=None, seed=lcd.STUDENT_SEED):
        name = _run_name(solver, k, s, iterations) + (f"_seed{seed}" if seed != lcd.STUDENT_SEED else "")
        N = 1000 // k
        target = self.weights / weight_file if weight_file else None
        timing = self.runs / "training.csv"
        if not self.force and timing.is_file() and any(r["name"] == name for r in read_csv(timing)) and \
                (target is None or target.is_file()):
            self.log(f"{name}: done; --force to redo")
            return
        g = self.grid
        every = g.main_eval_every if study == "main" else g.eval_every
        efn = _eval_fn(classifier, freal, self.teacher_features(teacher, classifier), num_ddim_timesteps=N,
                       timestep_scaling=s, n_eval=g.n_eval, n_boot=100,
                       device=self.device)
        st, sec = self._run_resumable(name, lambda resume, cfn: lcd.distill(
            teacher, data.load("train"), num_ddim_timesteps=N, solver=solver, timestep_scaling=s,
            iterations=iterations, batch_size=g.student_batch, seed=seed, device=self.device,
            progress=self.progress, resume=resume, checkpoint_fn=cfn, eval_every=every, eval_fn=efn,
            **RECIPE))
        rows = []
        for e in st.extra["evals"]:
            it = e["iteration"]
            window = st.losses[max(it - every, 0):it]
            rows.append({"run": name, "study": study, "solver": solver, "k": k, "timestep_scaling": s,
                         "iteration": it, "fd": e["fd"], "fd_lo": e["fd_lo"], "fd_hi": e["fd_hi"],
                         "fd_teacher": e["fd_teacher"], "fd_teacher_lo": e["fd_teacher_lo"],
                         "fd_teacher_hi": e["fd_teacher_hi"], "fd_teacher_pix": e.get("fd_teacher_pix", ""),
                         "fd_teacher_pix_lo": e.get("fd_teacher_pix_lo", ""),
                         "fd_teacher_pix_hi": e.get("fd_teacher_pix_hi", ""), "class_score": e["class_score"],
                         "omega_move": e["omega_move"], "omega_align": e["omega_align"],
                         "loss": float(np.mean(window)) if window else "", "seed": seed,
                         "grid": g.name})
        self._curves(name, study, rows)
        if target is not None:
            ck.save(target, st.model, self._record(
                seed, lcd={"num_ddim_timesteps": N, "skipping_step": k, "solver": solver, "timestep_scaling": s,
                           "omega_min": lcd.OMEGA_RANGE[0], "omega_max": lcd.OMEGA_RANGE[1],
                           "iterations": iterations, "batch_size": g.student_batch, **RECIPE},
                usage=usage(role or "student", st.model.config.time_cond_proj_dim),
                teacher_sha256=json.loads(ck.record_path(self.weights / WEIGHT_FILES["teacher"]).read_text())
                ["sha256"], seconds=round(sec, 1)))
        self._times({"name": name, "stage": study, "iterations": iterations, "batch_size": g.student_batch,
                     "seconds": round(sec, 1), "device": str(self.device), "torch_threads": torch.get_num_threads(),
                     "grid": g.name})
        self.log(f"{name}: FD {rows[-1]['fd']:.3g} at 4 steps ({sec:.0f} s)")


def train(only=None, *, device="cpu", grid=None, work=None, weights=None, runs=None, data_out=None,
          force=False, progress=True, threads=1, command=None, log=print, student_iterations=None) -> None:
    """Train every stage of ``STAGES`` (or those in ``only``) in order; resumable (see the module docstring).

    ``grid``: "cpu" (default on a CPU) or "full" (default on CUDA); ``work``, ``weights``, ``runs``: where the
    run states, the weights and the curves go (default ``OUT_DIR``/work, /weights, /runs under the current
    directory; the package's folders only when named); ``data_out``: a copy of the CSVs for the reports (default
    None: none); ``student_iterations``: the main student's
    length instead of the grid's (a run of I iterations is the first I of any longer one: the learning rate is
    constant after the warm-up, so a longer run's saved state at iteration I resumes into exactly this run)."""
    only = list(STAGES) if not only else list(only)
    for s in only:
        if s not in STAGES:
            raise LCMRefError("--only", s, f"one of {STAGES}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LCMRefError("--device", device, "a device torch can use here (CUDA is not available)")
    grid = grid or ("full" if dev.type == "cuda" else "cpu")
    if grid not in GRIDS:
        raise LCMRefError("--grid", grid, f"one of {tuple(GRIDS)}")
    if not (isinstance(threads, int) and threads >= 1):
        raise LCMRefError("--threads", threads, "an integer >= 1")
    if student_iterations is not None and not (isinstance(student_iterations, int) and student_iterations >= 1):
        raise LCMRefError("--student-iterations", student_iterations, "an integer >= 1")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = False
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False      # float32 arithmetic on CUDA as on CPU
        torch.backends.cudnn.allow_tf32 = False
    try:
        g = GRIDS[grid] if student_iterations is None else replace(GRIDS[grid], student_iterations=student_iterations)
        out = Path.cwd() / OUT_DIR
        t = _Trainer(grid=g, device=dev, work=Path(work or out / "work"), weights=Path(weights or out / "weights"),
                     runs=Path(runs or out / "runs"),
                     data_out=Path(data_out) if data_out else None, force=force, progress=progress,
                     command=command or "lcm-ref paper train " + " ".join(sys.argv[3:]), log=log)
        t.weights.mkdir(parents=True, exist_ok=True)
        t.runs.mkdir(parents=True, exist_ok=True)
        # --force redoes the stages named, not what they need first: a student stage must not retrain the teacher
        t.force = force and "classifier" in only
        classifier = t.classifier() if "classifier" in only or any(s != "classifier" for s in only) else None
        need_teacher = any(s in only for s in ("teacher", "student", "student_seeds", "scaling", "skipping"))
        t.force = force and "teacher" in only
        teacher = t.teacher() if need_teacher else None
        t.force = force
        if teacher is None:
            return
        freal = clf.features(classifier, data.load("test").x)
        g = t.grid
        if "student" in only:
            t.lcd_run(teacher, classifier, freal, study="main", solver="ddim", k=20, s=10.0,
                      iterations=g.student_iterations, weight_file=WEIGHT_FILES["student"], role=ROLES["student"])
        if "student_seeds" in only:
            for name, seed in EXTRA_SEEDS.items():
                t.lcd_run(teacher, classifier, freal, study="main", solver="ddim", k=20, s=10.0,
                          iterations=g.student_iterations, weight_file=WEIGHT_FILES[name], role=ROLES[name],
                          seed=seed)
        if "scaling" in only:
            for s, name in ((1.0, "student_s1"), (100.0, "student_s100")):
                t.lcd_run(teacher, classifier, freal, study="scaling", solver="ddim", k=20, s=s,
                          iterations=g.scaling_iterations, weight_file=WEIGHT_FILES[name], role=ROLES[name])
        if "skipping" in only:
            for solver in lcd.SOLVERS:
                for k in KS:
                    t.lcd_run(teacher, classifier, freal, study="skipping", solver=solver, k=k, s=10.0,
                              iterations=g.fig3_iterations)
    finally:
        torch.set_num_threads(old_threads)


