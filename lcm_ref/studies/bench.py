"""``lcm-ref bench``: TorchLCM against diffusers' ``LCMScheduler.step``, measured side by side in one run.

Every time is the median over interleaved rounds (each round times every contender once, so a change in machine
load hits all of them alike); every claim is a ratio of two times from the same run:

- step, float32, shapes 1×4×64×64, 1×4×128×128, 4×4×128×128: noise drawn inside (against ``torch.randn`` of the
  same shape alone, the floor of any step that draws its noise) and noise given (diffusers' ``randn_tensor`` is
  swapped for one returning the given tensor, so both sides do arithmetic only; floor: one elementwise pass
  ``x + b·y``);
- per-sample timesteps, B = 64: one ``TorchLCM`` call against 64 diffusers calls (one per sample, as diffusers
  needs), per-sample latents 4×64×64 and 4×16×16;
- CUDA only: the float16 8×4×128×128 step as a fraction of the device's memory-bandwidth roofline (bytes a step
  must move: read x, m, z and write prev, denoised; bandwidth measured by a 256 MiB device copy in the same run;
  every step on its own buffers from a ring larger than the L2 cache), eager, ``fused=True`` (one compiled
  kernel) and fused inside a CUDA graph; and the per-step scheduler time of a 4-step loop captured in a CUDA graph.
- accuracy beside it: max scaled error (docs/design.md §8) of TorchLCM and of diffusers, float32, per config.

Writes ``bench.csv``, ``bench_accuracy.csv`` and ``bench.md`` (``bench_cuda*`` on CUDA) into ``--out`` (default
``reports/data``), each through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import reference as ref
from ..config import LCMConfig
from ..numerics import write_atomic
from ..torch_impl import TorchLCM
from ..torch_impl.bounds import step_bounds, step_kind

SHAPES = ((1, 4, 64, 64), (1, 4, 128, 128), (4, 4, 128, 128))
PER_SAMPLE = ((4, 64, 64), (4, 16, 16))
BATCH = 64
ROOFLINE_SHAPE = (8, 4, 128, 128)
LOOP_SHAPE = (1, 4, 128, 128)
TARGETS = {"speedup": 2.5, "randn": 1.3, "batch": 20.0, "roofline": 0.8}
ACCURACY_CONFIGS = {
    "default (epsilon)": LCMConfig(),
    "v_prediction": LCMConfig(prediction_type="v_prediction"),
    "sample": LCMConfig(prediction_type="sample"),
    "linear 1e-4..0.02": LCMConfig(beta_schedule="linear", beta_start=1e-4, beta_end=0.02),
    "squaredcos_cap_v2": LCMConfig(beta_schedule="squaredcos_cap_v2"),
    "timestep_scaling 0.1": LCMConfig(timestep_scaling=0.1),
    "timestep_scaling 1000": LCMConfig(timestep_scaling=1000.0),
    "zero-SNR, v_prediction": LCMConfig(prediction_type="v_prediction", rescale_betas_zero_snr=True),
    "clip_sample": LCMConfig(clip_sample=True),
    "thresholding": LCMConfig(thresholding=True, sample_max_value=2.0),
}
COLUMNS = ("benchmark", "shape", "dtype", "ours_us", "diffusers_us", "speedup", "limit", "limit_us",
           "ratio_to_limit", "roofline_pct", "target", "met", "note", "device", "torch_version", "diffusers_version")


# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------

def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _once(fn, device, inner):
    """Seconds per call of ``fn`` over ``inner`` back-to-back calls."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / inner


def measure(fns: dict, device="cpu", repeats=31, min_time=2e-3) -> dict:
    """Median seconds per call of each function, over ``repeats`` interleaved rounds; each sample runs a function
    ``inner`` times back to back, ``inner`` chosen so a sample lasts about ``min_time``."""
    inner = {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        inner[name] = max(1, int(min_time / max(_once(fn, device, 1), 1e-7)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_once(fn, device, inner[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


@contextlib.contextmanager
def _diffusers_noise(given):
    """diffusers' LCMScheduler.step with its randn_tensor swapped for one returning ``given()``. Not
    ``lcm_ref.oracle.noise.NoiseTap(inject=...)``: that lets the step draw, then copies and records, all inside the timing;
    here diffusers, like ours, is timed stepping on a given z."""
    import diffusers.schedulers.scheduling_lcm as lcm_module
    original = lcm_module.randn_tensor
    lcm_module.randn_tensor = lambda *a, **k: given()
    try:
        yield
    finally:
        lcm_module.randn_tensor = original


def _diffusers():
    try:
        import diffusers
        return diffusers
    except ImportError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Benchmarks
# ---------------------------------------------------------------------------------------------------------------------

def _row(**kw):
    row = {k: math.nan if k.endswith(("_us", "speedup", "ratio_to_limit", "pct")) else "" for k in COLUMNS}
    row.update(kw)
    if not math.isnan(row["ours_us"]) and not math.isnan(row["diffusers_us"]):
        row["speedup"] = row["diffusers_us"] / row["ours_us"]
    if not math.isnan(row["ours_us"]) and not math.isnan(row["limit_us"]):
        row["ratio_to_limit"] = row["ours_us"] / row["limit_us"]
    return row


def _shape(s):
    return "x".join(str(v) for v in s)


def _met(ok):
    return "" if ok is None else ("yes" if ok else "no")


def step_rows(device, repeats):
    """Step time, float32: noise drawn inside and noise given, against diffusers and the two floors."""
    dfs = _diffusers()
    rows = []
    for shape in SHAPES:
        g = torch.Generator().manual_seed(0)
        x, m, z = (torch.randn(shape, generator=g).to(device) for _ in range(3))
        eng = TorchLCM(LCMConfig(), device=device)
        ts = eng.set_timesteps(4).tolist()
        gen = torch.Generator(device).manual_seed(1)
        fns = {
            "ours_drawn": lambda: eng.step(m, ts[1], x, generator=gen, step_index=1),
            "ours_given": lambda: eng.step(m, ts[1], x, z, step_index=1),
            "randn": lambda: torch.randn(shape, generator=gen, device=device),
            "axpy": lambda: torch.add(x, m, alpha=0.5),
        }
        if dfs is not None:
            sched = dfs.LCMScheduler()
            sched.set_timesteps(4, device=device)

            def theirs_drawn():
                sched._step_index = 1
                return sched.step(m, sched.timesteps[1], x, generator=gen)

            def theirs_given():
                with _diffusers_noise(lambda: z):
                    return theirs_drawn()
            fns.update(theirs_drawn=theirs_drawn, theirs_given=theirs_given)
        t = {k: v * 1e6 for k, v in measure(fns, device, repeats).items()}
        nan = math.nan
        drawn = _row(benchmark="step, noise drawn inside", shape=_shape(shape), dtype="float32",
                     ours_us=t["ours_drawn"], diffusers_us=t.get("theirs_drawn", nan), limit="randn alone",
                     limit_us=t["randn"], target=f">= {TARGETS['speedup']}x diffusers; <= {TARGETS['randn']}x randn")
        drawn["met"] = _met(drawn["ratio_to_limit"] <= TARGETS["randn"] and drawn["speedup"] >= TARGETS["speedup"]
                            if dfs else None)
        if dfs is not None:   # both sides draw the same randn: no step can beat diffusers by more than this
            ceiling = t["theirs_drawn"] / t["randn"]
            drawn["note"] = f"speedup ceiling with the same draw: diffusers / randn = {ceiling:.2f}"
        given = _row(benchmark="step, noise given", shape=_shape(shape), dtype="float32", ours_us=t["ours_given"],
                     diffusers_us=t.get("theirs_given", nan), limit="one pass x + b*y", limit_us=t["axpy"],
                     target=f">= {TARGETS['speedup']}x diffusers")
        given["met"] = _met(given["speedup"] >= TARGETS["speedup"] if dfs else None)
        rows += [drawn, given]
    return rows


def batch_rows(device, repeats, fast):
    """Per-sample timesteps: one call with B = 64 step indices against 64 diffusers calls; the floors beside them
    (``torch.randn`` of the whole batch for the noise-drawn row, one elementwise pass for the noise-given row) bound
    the speedup any implementation could reach."""
    dfs = _diffusers()
    rows = []
    for per in PER_SAMPLE[:1] if fast else PER_SAMPLE:
        shape = (BATCH,) + per
        g = torch.Generator().manual_seed(2)
        x, m, z = (torch.randn(shape, generator=g).to(device) for _ in range(3))
        eng = TorchLCM(LCMConfig(), device=device)
        eng.set_timesteps(8)
        idx_host = torch.randint(0, 8, (BATCH,), generator=g).tolist()
        idx = torch.tensor(idx_host, device=device)
        gen = torch.Generator(device).manual_seed(3)
        fns = {"ours_given": lambda: eng.step(m, None, x, z, step_index=idx),
               "ours_drawn": lambda: eng.step(m, None, x, generator=gen, step_index=idx),
               "randn": lambda: torch.randn(shape, generator=gen, device=device),
               "axpy": lambda: torch.add(x, m, alpha=0.5)}
        if dfs is not None:
            sched = dfs.LCMScheduler()
            sched.set_timesteps(8, device=device)
            current = [0]

            def theirs_drawn():
                for b, i in enumerate(idx_host):
                    current[0] = b
                    sched._step_index = i
                    sched.step(m[b:b + 1], sched.timesteps[i], x[b:b + 1], generator=gen)

            def theirs_given():
                with _diffusers_noise(lambda: z[current[0]:current[0] + 1]):
                    theirs_drawn()
            fns.update(theirs_drawn=theirs_drawn, theirs_given=theirs_given)
        t = {k: v * 1e6 for k, v in measure(fns, device, max(5, repeats // 3)).items()}
        for kind, floor, limit in (("given", "axpy", "one pass x + b*y"), ("drawn", "randn", "randn alone")):
            r = _row(benchmark=f"per-sample timesteps, B={BATCH}, noise {kind}", shape=_shape(shape),
                     dtype="float32", ours_us=t[f"ours_{kind}"], diffusers_us=t.get(f"theirs_{kind}", math.nan),
                     limit=limit, limit_us=t[floor], target=f">= {TARGETS['batch']}x {BATCH} diffusers calls")
            r["met"] = _met(r["speedup"] >= TARGETS["batch"] if dfs else None)
            if dfs is not None:   # ours cannot be faster than its floor: diffusers / floor bounds the speedup
                r["note"] = f"speedup ceiling: diffusers / {limit} = {t[f'theirs_{kind}'] / t[floor]:.2f}"
            rows.append(r)
    return rows


def _graph(fn, repeats_inside=1):
    """A CUDA graph of ``fn`` called ``repeats_inside`` times (warmed up on a side stream first)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats_inside):
            fn()
    return graph


def roofline_rows(device, repeats, fast):
    """float16 8×4×128×128 step against the copy bandwidth measured here (CUDA only)."""
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 64 << 20) or (64 << 20)
    shape, dtype = ROOFLINE_SHAPE, torch.float16
    numel = math.prod(shape)
    step_bytes = 5 * numel * 2                        # read x, m, z; write prev, denoised (2 bytes each)
    ring = max(8, math.ceil(4 * l2 / step_bytes))     # buffers > 4×L2: every step reads and writes DRAM
    g = torch.Generator(device).manual_seed(0)
    bufs = [tuple(torch.randn(shape, generator=g, device=device, dtype=dtype) for _ in range(3)) for _ in range(ring)]
    big = torch.empty(256 << 20, dtype=torch.uint8, device=device)
    big_dst = torch.empty_like(big)
    copy_s = measure({"copy": lambda: big_dst.copy_(big)}, device, repeats)["copy"]
    bandwidth = 2 * big.numel() / copy_s             # bytes read + written per second
    roof_us = step_bytes / bandwidth * 1e6
    variants = {"eager": TorchLCM(LCMConfig(), device=device, dtype=dtype)}
    if not fast:
        variants["fused (torch.compile)"] = TorchLCM(LCMConfig(), device=device, dtype=dtype, fused=True)
    rows = []
    for name, eng in list(variants.items()) + ([("fused, CUDA graph", variants.get("fused (torch.compile)"))]
                                              if not fast else []):
        eng.set_timesteps(4)

        def ring_pass(eng=eng):
            for x, m, z in bufs:
                eng.step(m, 759, x, z, step_index=1)
        try:
            if name.endswith("CUDA graph"):
                graph = _graph(ring_pass)
                per = measure({"g": graph.replay}, device, repeats)["g"] / ring
            else:
                per = measure({"s": ring_pass}, device, repeats)["s"] / ring
        except Exception as e:  # a compile failure is reported in the table, not hidden
            rows.append(_row(benchmark=f"fp16 step vs roofline, {name}: failed ({type(e).__name__})",
                             shape=_shape(shape), dtype="float16", ours_us=math.nan))
            continue
        r = _row(benchmark=f"fp16 step vs memory roofline, {name}", shape=_shape(shape), dtype="float16",
                 ours_us=per * 1e6, limit=f"{step_bytes / 2**20:.3g} MiB at copy bandwidth {bandwidth / 1e9:.0f} GB/s",
                 limit_us=roof_us, target=f">= {TARGETS['roofline']:.0%} of roofline")
        r["roofline_pct"] = 100 * roof_us / r["ours_us"]
        r["met"] = _met(r["roofline_pct"] >= 100 * TARGETS["roofline"])
        rows.append(r)
    # What one kernel moving the same bytes reaches here: a copy of 2.5·numel float16 values (5·numel·2 bytes read
    # plus written), in the same ring, captured in a CUDA graph. At 5 MiB a kernel is short enough that its launch
    # and ramp cost shows: this row is the practical ceiling the step rows compare against.
    pairs = [tuple(torch.empty(5 * numel // 2, dtype=dtype, device=device) for _ in range(2))
             for _ in range(ring)]

    def copy_pass():
        for src, dst in pairs:
            dst.copy_(src)
    try:
        per = measure({"g": _graph(copy_pass).replay}, device, repeats)["g"] / ring
        r = _row(benchmark="same-bytes copy kernel (practical ceiling), CUDA graph", shape=_shape(shape),
                 dtype="float16", ours_us=per * 1e6, limit_us=roof_us,
                 limit=f"{step_bytes / 2**20:.3g} MiB at copy bandwidth {bandwidth / 1e9:.0f} GB/s")
        r["roofline_pct"] = 100 * roof_us / r["ours_us"]
        rows.append(r)
    except RuntimeError as e:
        rows.append(_row(benchmark=f"same-bytes copy kernel: failed ({type(e).__name__})", ours_us=math.nan))
    return rows


def loop_rows(device, repeats, fast):
    """Per-step scheduler time of a 4-step loop (float16 1×4×128×128, noise drawn inside from the default CUDA
    generator): eager, captured in a CUDA graph, and fused + graph; diffusers' eager loop beside it."""
    dtype = torch.float16
    x0 = torch.randn(LOOP_SHAPE, device=device, dtype=dtype)
    m = torch.randn(LOOP_SHAPE, device=device, dtype=dtype)
    engines = {"eager": TorchLCM(LCMConfig(), device=device, dtype=dtype)}
    engines["CUDA graph"] = engines["eager"]
    if not fast:
        engines["fused, CUDA graph"] = TorchLCM(LCMConfig(), device=device, dtype=dtype, fused=True)
    fns = {}
    for name, eng in engines.items():
        ts = eng.set_timesteps(4).tolist()

        def loop(eng=eng, ts=ts):
            x = x0
            for i, t in enumerate(ts):
                x = eng.step(m, t, x, step_index=i).prev_sample
            return x
        fns[name] = _graph(loop).replay if "graph" in name else loop
    dfs = _diffusers()
    if dfs is not None:
        sched = dfs.LCMScheduler()

        sched.set_timesteps(4, device=device)

        def theirs():
            sched._step_index = None          # as after set_timesteps: the first step looks its index up
            x = x0
            for t in sched.timesteps:
                x = sched.step(m, t, x).prev_sample
            return x
        fns["diffusers"] = theirs
    t = {k: v * 1e6 / 4 for k, v in measure(fns, device, repeats).items()}
    return [_row(benchmark=f"4-step loop, per step, {name}", shape=_shape(LOOP_SHAPE), dtype="float16",
                 ours_us=t[name], diffusers_us=t.get("diffusers", math.nan)) for name in engines]


def accuracy_rows(device="cpu", shape=(1, 4, 32, 32), steps=8):
    """Max scaled error (docs/design.md §8) of TorchLCM and of diffusers' LCMScheduler, float32, over a ``steps``-step
    schedule on fixed N(0, 1) inputs, both given the same noise; ``bound_*`` are TorchLCM's derived float32 bounds
    for the config's kind of step (``torch_impl.bounds.step_bounds``)."""
    dfs = _diffusers()
    rows = []
    for name, cfg in ACCURACY_CONFIGS.items():
        eng = TorchLCM(cfg, device=device)
        sched = eng.set_timesteps(steps).cpu().numpy()
        theirs = dfs.LCMScheduler(**cfg.to_dict()) if dfs else None
        if theirs is not None:
            theirs.set_timesteps(steps, device=device)
        worst = {"ours": [0.0, 0.0], "diffusers": [0.0, 0.0]}
        g = torch.Generator().manual_seed(0)
        for i, t in enumerate(sched.tolist()):
            x, m, z = (torch.randn(shape, generator=g) for _ in range(3))
            last = i == steps - 1
            want = ref.step(cfg, m, t, x, schedule=sched, noise=None if last else z, step_index=i)
            terms = ref.step_terms(cfg, m, t, x, schedule=sched, noise=None if last else z, step_index=i)
            outs = {"ours": eng.step(m.to(device), t, x.to(device), z.to(device), step_index=i)}
            if theirs is not None:
                theirs._step_index = i
                with _diffusers_noise(lambda: z.to(device)):
                    outs["diffusers"] = theirs.step(m.to(device), theirs.timesteps[i], x.to(device))
            for who, out in outs.items():
                for k, (got, w, tm) in enumerate(((out.denoised, want.denoised, terms.denoised),
                                                  (out.prev_sample, want.prev_sample, terms.prev_sample))):
                    worst[who][k] = max(worst[who][k], float(ref.scaled_error(got, w, tm, "float32").max()))
        bound = step_bounds(torch.float32, step_kind(cfg))
        rows.append(dict(config=name, ours_denoised=worst["ours"][0], ours_prev=worst["ours"][1],
                         diffusers_denoised=worst["diffusers"][0] if dfs else math.nan,
                         diffusers_prev=worst["diffusers"][1] if dfs else math.nan,
                         bound_denoised=bound[0], bound_prev=bound[1]))
    return rows


def device_name(device):
    """"cuda: <GPU name>", or "cpu: <CPU model>, N intra-op thread(s)" with torch's thread count at the call (inside
    ``run_benchmarks``: the count the benchmarks run with)."""
    if torch.device(device).type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    n = torch.get_num_threads()
    return f"cpu: {cpu}, {n} intra-op thread{'' if n == 1 else 's'}"


THREADS = 1     #: torch intra-op threads ``run_benchmarks`` sets by default (both sides)


def run_benchmarks(device="cpu", fast=False, progress=False, threads=THREADS) -> list:
    """All timing rows for ``device`` (dicts with the keys of COLUMNS); ``fast``: fewer repeats, no compiled
    variants, one per-sample shape. ``threads``: torch's intra-op threads during the run (restored after; None
    keeps torch's setting). One by default: both sides get the same count, and on a small shared machine OpenMP
    barriers make multi-threaded times swing by 100× when another process wants a core."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    repeats = 9 if fast else 41
    parts = [("step", lambda: step_rows(device, repeats)), ("per-sample batch", lambda: batch_rows(device, repeats,
                                                                                                   fast))]
    if torch.device(device).type == "cuda":
        parts += [("roofline", lambda: roofline_rows(device, repeats, fast)),
                  ("graph loop", lambda: loop_rows(device, repeats, fast))]
    dfs = _diffusers()
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        info = dict(device=device_name(device), torch_version=torch.__version__,
                    diffusers_version=dfs.__version__ if dfs else "not installed")
        rows = []
        with torch.inference_mode():
            for name, part in tqdm(parts, desc="lcm-ref bench", disable=not progress):
                rows += [dict(r, **info) for r in part()]
    finally:
        torch.set_num_threads(saved)
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Reading the rows: why a target is not met, and the figure
# ---------------------------------------------------------------------------------------------------------------------

def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ceiling(row):
    """diffusers / the row's floor (limit): no implementation that does at least the floor's work is faster."""
    return _num(row.get("diffusers_us")) / _num(row.get("limit_us"))


def explain(row, rows) -> str:
    """Why ``row``'s target is not met ("" if it is met or has none), from the numbers of ``rows`` (one run: a live
    run or a results file such as ``bench_cuda.csv``). The reasons are the limits measured beside each row:

    - a speedup target above the ceiling diffusers / floor (the floor being ``torch.randn`` of the same shape when
      the noise is drawn, one elementwise pass when it is given) cannot be met on that machine by any step;
    - a step above its randn floor: how much time the step spends besides the draw, beside its noise-given twin,
      and, where it exists, the CUDA-graph row that removes the per-call overhead;
    - a roofline target above what a plain copy kernel of the same bytes reaches (the "practical ceiling" row)."""
    if row.get("met") != "no":
        return ""
    name, shape = str(row.get("benchmark", "")), row.get("shape")
    speedup, ratio, ceiling = _num(row.get("speedup")), _num(row.get("ratio_to_limit")), _ceiling(row)
    why = []
    if name.startswith(("step,", "per-sample")):
        target = TARGETS["batch"] if name.startswith("per-sample") else TARGETS["speedup"]
        if speedup < target:
            if ceiling < target:
                why.append(f"speedup {speedup:.2f} < {target:g}: not reachable on this machine, where even a step "
                           f"that cost only its floor ({row.get('limit')}) would be at most {ceiling:.2f}× faster "
                           "than diffusers")
            elif math.isnan(ceiling):
                why.append(f"speedup {speedup:.2f} < {target:g} (no floor measured in this file)")
            else:
                why.append(f"speedup {speedup:.2f} < {target:g} although the floor allows {ceiling:.2f}: "
                           f"ours takes {ratio:.2f}× its floor")
        if name.startswith("step, noise drawn") and ratio > TARGETS["randn"]:
            given = next((r for r in rows if str(r.get("benchmark")) == "step, noise given"
                          and r.get("shape") == shape), {})
            loop = next((r for r in rows if str(r.get("benchmark", "")).endswith("fused, CUDA graph")
                         and str(r.get("benchmark", "")).startswith("4-step loop")), None)
            g_ours, g_floor = _num(given.get("ours_us")), _num(given.get("limit_us"))
            reason = (f"{ratio:.2f}× randn > {TARGETS['randn']:g}: besides the draw the step spends "
                      f"{_num(row.get('ours_us')) - _num(row.get('limit_us')):.3g} µs on its arithmetic and calls "
                      f"(with the noise given it takes {g_ours:.3g} µs, {g_ours / g_floor:.1f}× one elementwise pass)")
            if loop is not None:
                reason += (f"; fused inside a CUDA graph, without per-call overhead, a step takes "
                           f"{_num(loop.get('ours_us')):.3g} µs")
            why.append(reason)
    elif "roofline" in name:
        copy = next((r for r in rows if str(r.get("benchmark", "")).startswith("same-bytes copy kernel")), None)
        pct, copy_pct = _num(row.get("roofline_pct")), _num(copy.get("roofline_pct")) if copy else math.nan
        if "CUDA graph" not in name:
            why.append(f"{pct:.3g}% of roofline: launch-bound (launching the step's kernels from Python costs more "
                       f"than moving {row.get('limit', '').split(' at ')[0]}); see the CUDA-graph row")
        elif copy_pct < TARGETS["roofline"] * 100:
            why.append(f"{pct:.3g}% of roofline: a plain copy kernel moving the same bytes reaches {copy_pct:.3g}% "
                       f"here (kernel launch and ramp-up dominate at this size), so "
                       f"{TARGETS['roofline']:.0%} is not reachable; the step is at {pct / copy_pct:.0%} of that "
                       "practical ceiling")
        else:
            why.append(f"{pct:.3g}% of roofline, below the copy kernel's {copy_pct:.3g}%")
    return "; ".join(why)


def annotate(rows) -> list:
    """Copies of ``rows`` whose ``note`` also says why an unmet target is not met (``explain``), for display: the
    CSV files keep the measured note only."""
    out = []
    for r in rows:
        why = explain(r, rows)
        note = str(r.get("note") or "")
        out.append({**r, "note": note if why in note else "; ".join(p for p in (note, why) if p)})
    return out


def plot(rows, title):
    """speedup (diffusers / TorchLCM) and ratio_to_limit (TorchLCM / limit) per benchmark row, log scale. Returns
    the figure (None if no row has a speedup)."""
    import matplotlib.pyplot as plt
    rows = [r for r in rows if math.isfinite(_num(r.get("speedup")))]
    if not rows:
        return None
    labels = [f"{r['benchmark']} {r['shape']}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.4), sharey=True)
    axes[0].barh(labels, [_num(r["speedup"]) for r in rows], color="tab:blue")
    axes[0].axvline(1.0, color="k", lw=0.6)
    axes[0].set(xscale="log", title="speedup = diffusers / TorchLCM (> 1: TorchLCM faster)",
                xlabel="speedup (diffusers' time / TorchLCM's time, log)")
    axes[1].barh(labels, [_num(r.get("ratio_to_limit")) for r in rows], color="tab:orange")
    axes[1].axvline(1.0, color="k", lw=0.6)
    axes[1].set(xscale="log", title="TorchLCM against its limit (1: at the limit)",
                xlabel="TorchLCM's time / the limit's time (log)")
    axes[0].invert_yaxis()
    axes[0].tick_params(axis="y", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------

def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown_table(rows, columns=None) -> str:
    columns = columns or [c for c in rows[0] if c not in ("device", "torch_version", "diffusers_version")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _csv(rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows({k: _fmt(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def write_outputs(rows, accuracy, out_dir, device):
    suffix = "_cuda" if torch.device(device).type == "cuda" else ""
    out = Path(out_dir)
    write_atomic(out / f"bench{suffix}.csv", _csv(rows))
    write_atomic(out / f"bench{suffix}_accuracy.csv", _csv(accuracy))
    head = rows[0]
    md = [f"# lcm-ref bench ({device})", "",
          f"Device: **{head['device']}**; torch {head['torch_version']}, diffusers {head['diffusers_version']}, "
          f"Python {platform.python_version()}, {platform.platform()}.", "",
          "Times are medians (µs) over interleaved rounds; speedup = diffusers / ours; ratio_to_limit = ours / "
          "limit; roofline_pct = time at the measured copy bandwidth / ours; `note` says why an unmet target is not "
          "met.",
          "", markdown_table(annotate(rows)), "",
          "## Accuracy (max scaled error, docs/design.md §8, float32, 8-step schedule)", "", markdown_table(accuracy), ""]
    write_atomic(out / f"bench{suffix}.md", "\n".join(md))
    if suffix:
        from .evidence import record
        record(out, [f"bench{suffix}.csv", f"bench{suffix}_accuracy.csv", f"bench{suffix}.md"])
    return [out / f"bench{suffix}.csv", out / f"bench{suffix}_accuracy.csv", out / f"bench{suffix}.md"]
