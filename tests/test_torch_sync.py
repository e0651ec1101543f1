"""TorchLCM's hot path never synchronises with the host: no tensor value is read on the host, no tensor is built
from host data, no tensor on another device takes part; a multistep loop traces with torch.compile(fullgraph=True)
and, on CUDA, runs under torch.cuda.set_sync_debug_mode("error") and inside a CUDA graph.

Three independent CPU checks, each shown to catch a mutant that synchronises (so none can pass by accident):
``HostReads`` (a dispatch mode that records the aten ops that read values on the host), a run on the ``meta``
device (which has no values: any read raises, any CPU tensor mixed in raises), and a fullgraph trace (a branch on a
tensor value breaks the graph). torch.compile alone would not do: ``.item()`` used as a number traces without a
break in torch ≥ 2.5 (checked below).
"""

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import lcm_ref.reference as ref
from lcm_ref import LCMConfig
from lcm_ref.torch_impl import TorchLCM

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: aten ops that read a tensor's value on the host (a device→host sync on an accelerator) or turn host data into
#: a tensor (a host→device copy on an accelerator).
HOST_OPS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.is_nonzero.default",
            "aten.equal.default", "aten.masked_select.default", "aten._unique2.default", "aten.unique_dim.default",
            "aten.lift_fresh.default", "aten.allclose.default"}


class HostReads(TorchDispatchMode):
    """Records every op in HOST_OPS and every tensor argument not on ``device``."""

    def __init__(self, device):
        super().__init__()
        self.device, self.found = torch.device(device), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in HOST_OPS:
            self.found.append(str(func))
        for x in pytree.tree_leaves((args, kwargs or {})):
            if isinstance(x, torch.Tensor) and x.device != self.device:
                self.found.append(f"{func} got a tensor on {x.device}")
        return func(*args, **(kwargs or {}))


def engines(device):
    """(name, engine) for the linear path and both non-linear paths, with a 4-step schedule set."""
    out = []
    for name, cfg in (("linear", LCMConfig()), ("clip", LCMConfig(clip_sample=True)),
                      ("threshold", LCMConfig(thresholding=True, sample_max_value=2.0))):
        eng = TorchLCM(cfg, device=device)
        eng.set_timesteps(4)
        out.append((name, eng))
    return out


def hot_calls(eng, device):
    """Every hot-path call: steps by int, by timestep tensor, by step-index tensor (per sample), noise drawn or
    given, the last step, the forward process and previous_timestep on tensors."""
    shape = (3, 4, 8, 8)
    x, m, z = (torch.randn(shape, device=device) for _ in range(3))
    idx = torch.tensor([0, 2, 3], device=device)
    t = eng.timesteps[idx]
    return {
        "int step, noise given": lambda: eng.step(m, 999, x, z, step_index=0),
        "int step, noise drawn": lambda: eng.step(m, 999, x, step_index=0),
        "last int step": lambda: eng.step(m, 259, x, step_index=3),
        "timestep tensor": lambda: eng.step(m, t, x, z),
        "step-index tensor, noise drawn": lambda: eng.step(m, None, x, step_index=idx),
        "0-d timestep tensor": lambda: eng.step(m, eng.timesteps[1], x, z),
        "add_noise": lambda: eng.add_noise(x, z, t),
        "get_velocity": lambda: eng.get_velocity(x, z, t),
        "previous_timestep": lambda: eng.previous_timestep(t),
    }


@pytest.mark.parametrize("name,eng", engines("cpu"), ids=lambda v: v if isinstance(v, str) else "")
def test_hot_path_reads_no_values_on_cpu(name, eng):
    """No hot-path call reads a tensor value on the host or mixes in a tensor from another device."""
    for what, call in hot_calls(eng, "cpu").items():
        with HostReads("cpu") as mode:
            call()
        assert not mode.found, (name, what, mode.found)


@pytest.mark.parametrize("name,eng", engines("meta"), ids=lambda v: v if isinstance(v, str) else "")
def test_hot_path_runs_on_meta_device(name, eng):
    """Every hot-path call runs on the meta device (no values exist there) without touching a CPU tensor."""
    for what, call in hot_calls(eng, "meta").items():
        with HostReads("meta") as mode:
            out = call()
        assert not mode.found, (name, what, mode.found)
        assert all(o.device.type == "meta" for o in pytree.tree_leaves(out) if isinstance(o, torch.Tensor))


class SyncingLCM(TorchLCM):
    """Mutants of step that synchronise: ``kind`` = 'item' (a value used as a number), 'branch' (Python branch on
    a tensor value), 'host_tensor' (a tensor built from host data in the hot path)."""

    kind = "item"

    def step(self, model_output, timestep, sample, noise=None, **kw):
        out = super().step(model_output, timestep, sample, noise, **kw)
        if self.kind == "item":
            return out._replace(prev_sample=out.prev_sample * self.alphas_cumprod[0].item())
        if self.kind == "branch":
            return out if bool((sample > 100).any()) else out._replace(prev_sample=out.prev_sample + 0)
        return out._replace(prev_sample=out.prev_sample * torch.tensor([1.0]).to(sample.device))


#: What each check must report for each mutant: the aten op HostReads records on CPU, and on the meta device either
#: the error a value read raises or the foreign tensor HostReads records.
EXPECTED = {"item": ("aten._local_scalar_dense.default", "cannot be called on meta tensors"),
            "branch": ("aten._local_scalar_dense.default", "cannot be called on meta tensors"),
            "host_tensor": ("aten.lift_fresh.default", "got a tensor on cpu")}


@pytest.mark.parametrize("kind", ["item", "branch", "host_tensor"])
def test_checks_catch_a_syncing_step(kind):
    """Each mutant is caught by HostReads on CPU and by the meta run, each for its own reason; the fullgraph trace
    catches the branch but not '.item()' used as a number (why the dispatch-level check exists)."""
    on_cpu, on_meta = EXPECTED[kind]
    for device in ("cpu", "meta"):
        eng = SyncingLCM(LCMConfig(), device=device)
        eng.kind = kind
        eng.set_timesteps(4)
        # Inputs are built before entering the mode: torch.tensor(...) inside it would itself record lift_fresh and
        # make every mutant look caught.
        x = torch.randn(2, 4, 4, 4, device=device)
        idx = torch.tensor([0, 1], device=device)
        with HostReads(device) as clean:                     # control: the same call on the real step is clean
            TorchLCM.step(eng, x, None, x, x, step_index=idx)
        assert not clean.found, (kind, device, clean.found)
        if device == "meta" and kind != "host_tensor":       # the meta device refuses to read a value
            with pytest.raises(RuntimeError, match=on_meta), HostReads(device):
                eng.step(x, None, x, x, step_index=idx)
            continue
        with HostReads(device) as mode:
            eng.step(x, None, x, x, step_index=idx)
        assert any((on_cpu if device == "cpu" else on_meta) in f for f in mode.found), (kind, device, mode.found)
    eng = SyncingLCM(LCMConfig())
    eng.kind = kind
    eng.set_timesteps(4)
    idx = torch.tensor([0, 1])
    torch._dynamo.reset()
    traced = torch.compile(lambda x: eng.step(x, None, x, x, step_index=idx), fullgraph=True, backend="eager")
    if kind == "branch":
        with pytest.raises(Exception, match="data-dependent|Data-dependent|graph break"):
            traced(torch.randn(2, 4, 4, 4))
    elif kind == "item":                                     # the module docstring's claim: .item() slips through
        x = torch.randn(2, 4, 4, 4)
        assert torch.equal(traced(x).prev_sample, eng.step(x, None, x, x, step_index=idx).prev_sample)
    torch._dynamo.reset()


def test_multistep_loop_traces_with_fullgraph():
    """A 4-step loop with per-sample step indices traces as one graph (torch.compile(fullgraph=True); the eager
    backend keeps it cheap) and gives bitwise the eager result."""
    eng = TorchLCM(LCMConfig())
    eng.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=g)
    zs = torch.randn(4, 2, 4, 8, 8, generator=g)
    start = torch.tensor([0, 1])

    def loop(x, zs):
        for k in range(3):
            x = eng.step(x * 0.5, None, x, zs[k], step_index=start + k).prev_sample
        return x

    torch._dynamo.reset()
    traced = torch.compile(loop, fullgraph=True, backend="eager")
    assert torch.equal(traced(x0, zs), loop(x0, zs))
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.cuda
@CUDA
def test_no_sync_on_cuda():
    """Under torch.cuda.set_sync_debug_mode('error') every hot-path call runs (any sync would raise), and so do
    the drop-in's steps after the first (which finds the step index once, as diffusers does)."""
    calls = [c for _, eng in engines("cuda") for c in hot_calls(eng, "cuda").values()]
    pytest.importorskip("diffusers")
    from lcm_ref.torch_impl import LCMScheduler
    sched = LCMScheduler()
    sched.set_timesteps(4, device="cuda")
    x = torch.randn(1, 4, 8, 8, device="cuda")
    gen = torch.Generator("cuda").manual_seed(0)
    sched.step(x, sched.timesteps[0], x, generator=gen)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call()
        for t in sched.timesteps[1:]:
            sched.step(x, t, x, generator=gen)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("fused", [False, True])
def test_cuda_graph_captures_four_step_loop(fused):
    """A 4-step loop (noise drawn inside from the default CUDA generator, fp16) captured in a CUDA graph replays
    to bitwise the eager loop run from the same generator state; fused=True (torch.compile) as well."""
    eng = TorchLCM(LCMConfig(), device="cuda", dtype=torch.float16, fused=fused)
    ts = eng.set_timesteps(4).tolist()        # host ints: nothing is read from the device inside the capture
    x_static = torch.randn(2, 4, 32, 32, device="cuda", dtype=torch.float16)
    m_static = torch.randn_like(x_static)

    def loop():
        x = x_static
        for i, t in enumerate(ts):
            x = eng.step(m_static, t, x, step_index=i).prev_sample
        return x

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            loop()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = loop()
    torch.manual_seed(123)
    graph.replay()
    torch.cuda.synchronize()
    got = out.clone()
    torch.manual_seed(123)
    want = loop()
    torch.cuda.synchronize()
    assert torch.equal(got, want)


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_fused_step_matches_reference_on_cuda(dtype):
    """fused=True (one compiled kernel, FMA contraction allowed) stays within the derived bounds of
    lcm_ref.torch_impl.bounds at every step, by host index and by per-sample step indices."""
    from lcm_ref.torch_impl.bounds import check_scaled, step_bounds, step_kind
    cfg = LCMConfig()
    eng = TorchLCM(cfg, device="cuda", dtype=dtype, fused=True)
    ts = eng.set_timesteps(4).cpu().numpy()
    g = torch.Generator().manual_seed(0)
    x, m, z = (torch.randn(2, 4, 32, 32, generator=g).to(dtype) for _ in range(3))
    bound_den, bound_prev = step_bounds(dtype, step_kind(cfg))
    for i, t in enumerate(ts.tolist()):
        for out in (eng.step(m.cuda(), t, x.cuda(), z.cuda(), step_index=i),
                    eng.step(m.cuda(), None, x.cuda(), z.cuda(), step_index=torch.tensor([i, i], device="cuda"))):
            want = ref.step(cfg, m, t, x, schedule=ts, noise=z, step_index=i)
            terms = ref.step_terms(cfg, m, t, x, schedule=ts, noise=z, step_index=i)
            check_scaled(out.denoised, want.denoised, terms.denoised, dtype, bound_den, f"denoised at {t}")
            if i < len(ts) - 1:
                check_scaled(out.prev_sample, want.prev_sample, terms.prev_sample, dtype, bound_prev, f"prev at {t}")
