"""Workers for the torch.distributed tests: run under torch.multiprocessing with gloo on
CPU (a file rendezvous: no network). Each writes what the parent test checks to a JSON
file; rank 0 compares the sharded run with a single-process run of the same optimizer on
the same (gathered) gradients."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def _init(rank: int, world: int, tmp: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world
    )


def _finish() -> None:
    """Leave the process group and end the worker at once: its results are written, and
    skipping interpreter teardown avoids an intermittent C++ abort there ("terminate
    called without an active exception", seen once in seven runs with a cold numba
    cache), which mp.spawn would report as a failed worker."""
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 6))


def _data(rank: int, steps: int, width: int = 12):
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(8, width, generator=g), torch.randn(8, 6, generator=g))
            for _ in range(steps)]  # fmt: skip


def _compact_model(seed: int = 0) -> torch.nn.Module:
    """A first weight of 32 rows x 256 (rows are whole 8-bit blocks: int8 state when
    sharded), a second of 6 x 32 (small: fp32 state under int8)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(256, 32), torch.nn.Tanh(), torch.nn.Linear(32, 6))


def _shard(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


def _full(t) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


CASES = {
    "auto_plain": {},
    "single_tf1": {
        "preset": "tf1",
        "lr": 0.01,
        "momentum": 0.9,
        "centered": True,
        "impl": "single",
    },
    "foreach_keras": {
        "preset": "keras",
        "lr": 0.01,
        "momentum": 0.5,
        "weight_decay": 0.01,
        "impl": "foreach",
    },
    "numba_nesterov": {"momentum": 0.9, "nesterov": True, "eps_in_sqrt": True, "impl": "numba"},
    "global_clipnorm": {"global_clipnorm": 0.05, "momentum": 0.9},
    "clipnorm": {"clipnorm": 0.02},
}


def _make(params, case: dict):
    import rmsprop

    case = dict(case)
    preset = case.pop("preset", None)
    case.setdefault("lr", 0.01)
    if preset:
        return rmsprop.RMSprop.from_preset(params, preset, **case)
    return rmsprop.RMSprop(params, **case)


def _sharded_and_one_process(model, case: dict, batches):
    """Train the sharded ``model`` and a one-process copy of its parameters side by side
    (the copy gets the gathered gradients); returns both optimizers and parameter lists."""
    reference_params = [_full(p).detach().clone().requires_grad_() for p in model.parameters()]
    opt = _make(model.parameters(), case)
    ref_opt = _make(reference_params, case)
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        full_grads = [_full(p.grad) for p in model.parameters()]
        opt.step()
        for p, g in zip(reference_params, full_grads):
            p.grad = g.clone()
        ref_opt.step()
    sharded = [_full(p).detach() for p in model.parameters()]
    return opt, ref_opt, sharded, reference_params


def fsdp_worker(rank: int, world: int, tmp: str) -> None:
    """FSDP2: sharded steps == single-process steps on the gathered gradients."""
    _init(rank, world, tmp)
    out = {}
    for name, case in CASES.items():
        opt, _, sharded, reference_params = _sharded_and_one_process(
            _shard(_model()), case, _data(rank, 5)
        )
        exact = all(torch.equal(a, b) for a, b in zip(sharded, reference_params))
        max_ulp = max(
            float(((a - b).abs() / (torch.finfo(a.dtype).eps * b.abs().clamp_min(1e-30))).max())
            for a, b in zip(sharded, reference_params)
        )
        out[name] = {"exact": exact, "max_ulp": max_ulp, "impl": opt.last_impl.get(0)}
    # nonfinite="skip": rank 1 alone sees a NaN; every rank must skip the step
    model = _shard(_model())
    opt = _make(model.parameters(), {"nonfinite": "skip"})
    before = [_full(p).detach().clone() for p in model.parameters()]
    x, y = _data(rank, 1)[0]
    torch.nn.functional.mse_loss(model(x), y).backward()
    if rank == 1:
        next(model.parameters()).grad.to_local().view(-1)[0] = float("nan")
    opt.step()
    after = [_full(p).detach() for p in model.parameters()]
    out["skip"] = {"unchanged": all(torch.equal(a, b) for a, b in zip(before, after)),
                   "skipped": opt.skipped_steps}  # fmt: skip
    results = [None] * world
    dist.all_gather_object(results, out)
    if rank == 0:
        Path(tmp, "fsdp.json").write_text(json.dumps(results))
    _finish()


COMPACT_CASES = {
    "bf16_momentum_centered": {"state_dtype": torch.bfloat16, "momentum": 0.9, "centered": True},
    "int8_momentum_centered": {"state_dtype": "int8", "momentum": 0.9, "centered": True},
    "int8_tf1": {"preset": "tf1", "state_dtype": "int8", "momentum": 0.9},
}
#: the 2-D mesh runs these too
MESH_COMPACT_CASES = {
    **COMPACT_CASES,
    # pure-bf16 training: bf16 parameters written back with stochastic rounding, each
    # element on its own place of the stream (RowwiseParallel's columns too)
    "bf16_params_rounded": {
        "stochastic_rounding": True,
        "momentum": 0.9,
        "param_dtype": torch.bfloat16,
    },
}


def compact_worker(rank: int, world: int, tmp: str) -> None:
    """FSDP2 with bf16/int8 state: sharded steps == one process, parameters and state
    bit for bit; a weight whose rows are not whole blocks keeps fp32 state when sharded."""
    _init(rank, world, tmp)
    out = {}
    for name, case in COMPACT_CASES.items():
        model = _shard(_compact_model())
        opt, ref_opt, sharded, reference_params = _sharded_and_one_process(
            model, case, _data(rank, 5, width=256)
        )
        state, ref_state = opt.state[next(model.parameters())], ref_opt.state[reference_params[0]]
        out[name] = {
            "params_exact": all(torch.equal(a, b) for a, b in zip(sharded, reference_params)),
            "state_keys": sorted(state) == sorted(ref_state),
            "state_exact": all(torch.equal(_full(state[k]), ref_state[k]) for k in ref_state),
            "impl": opt.last_impl.get(0),
            "state_is_dtensor": all(
                hasattr(v, "device_mesh") for k, v in state.items() if k != "step"
            ),
        }
    from torch.distributed.fsdp import fully_shard

    model = fully_shard(torch.nn.Linear(64, 128))  # 128 rows of 64: blocks would straddle ranks
    opt = _make(model.parameters(), {"state_dtype": "int8"})
    model(torch.randn(4, 64)).sum().backward()
    opt.step()
    out["misaligned"] = sorted(k for k in opt.state[model.weight] if k != "step")
    out["misaligned_dtype"] = str(opt.state[model.weight]["square_avg"].dtype)
    results = [None] * world
    dist.all_gather_object(results, out)
    if rank == 0:
        Path(tmp, "compact.json").write_text(json.dumps(results))
    _finish()


def ddp_zero_worker(rank: int, world: int, tmp: str) -> None:
    """DDP, and ZeroRedundancyOptimizer(optimizer_class=rmsprop.RMSprop)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import rmsprop

    _init(rank, world, tmp)
    out = {}
    for name in ("ddp", "zero"):
        model = DDP(_model())
        reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
        if name == "ddp":
            opt = rmsprop.RMSprop(model.parameters(), lr=0.01, momentum=0.9, centered=True)
        else:
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=rmsprop.RMSprop,
                                          lr=0.01, momentum=0.9, centered=True)  # fmt: skip
        ref_opt = rmsprop.RMSprop(reference, lr=0.01, momentum=0.9, centered=True)
        for x, y in _data(rank, 5):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            for p, q in zip(reference, model.parameters()):
                p.grad = q.grad.clone()
            opt.step()
            ref_opt.step()
        params = [p.detach() for p in model.parameters()]
        gathered = [None] * world
        dist.all_gather_object(gathered, [p.tolist() for p in params])
        out[name] = {
            "equal_to_single_process": all(torch.equal(a, b) for a, b in zip(params, reference)),
            "ranks_agree": gathered[0] == gathered[-1],
        }
    if rank == 0:
        Path(tmp, "ddp.json").write_text(json.dumps(out))
    _finish()


def dcp_worker(rank: int, world: int, tmp: str, phase: str, state_dtype: str = "none") -> None:
    """Distributed checkpoint: 'save' after 5 steps, 'resume' in new processes for 5 more,
    'straight' for 10 steps; rank 0 writes the final full parameters. ``state_dtype``
    "int8" (the compact model) saves and loads 8-bit state as DTensors."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    _init(rank, world, tmp)
    compact = state_dtype == "int8"
    model = _shard(_compact_model() if compact else _model())
    extra = {"state_dtype": "int8", "centered": True} if compact else {}
    opt = _make(model.parameters(), {"preset": "tf1", "lr": 0.01, "momentum": 0.9, **extra})
    data = _data(rank, 10, width=256 if compact else 12)

    def run(batches):
        for x, y in batches:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    ckpt = str(Path(tmp, "ckpt"))
    if phase == "save":
        run(data[:5])
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, opt),
        }
        dcp.save(state, checkpoint_id=ckpt)
    elif phase == "resume":
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, opt),
        }
        dcp.load(state, checkpoint_id=ckpt)
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, opt, state["optim"])
        run(data[5:])
    else:
        run(data)
    final = [_full(p).detach() for p in model.parameters()]
    if rank == 0 and phase != "save":
        torch.save(final, Path(tmp, f"{phase}.pt"))
    _finish()


# ------------------------------------------------------------ 2-D meshes (4 ranks, 2 x 2)
MESH_CASES = {
    "plain": {"momentum": 0.9, "centered": True},
    "global_clipnorm": {"global_clipnorm": 0.05, "momentum": 0.9},
    "clipnorm": {"clipnorm": 0.02},
    "clipvalue": {"clipvalue": 0.01, "impl": "foreach"},
    "global_clipnorm_skip": {"global_clipnorm": 0.05, "nonfinite": "skip", "impl": "single"},
}


def _mesh_2d(layout: str):
    """The 2 x 2 mesh of ``layout`` ("hsdp": (replicate, shard); "fsdp_tp": (dp, tp))."""
    from torch.distributed.device_mesh import init_device_mesh

    names = ("replicate", "shard") if layout == "hsdp" else ("dp", "tp")
    return init_device_mesh("cpu", (2, 2), mesh_dim_names=names)


def _model_2d(mesh, layout: str, model=None) -> torch.nn.Module:
    """``_model()`` on the 2-D mesh, as torchtitan lays it out. HSDP: ``fully_shard`` on the
    (replicate, shard) mesh. FSDP x TP: the first Linear column-wise and the second
    row-wise over "tp" (its bias stays replicated there), then ``fully_shard`` over "dp"."""
    from torch.distributed.fsdp import fully_shard

    model = _model() if model is None else model
    if layout == "hsdp":
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    parallelize_module(model, mesh["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh["dp"])
    return fully_shard(model, mesh=mesh["dp"])


def _batch_rank(mesh, layout: str) -> int:
    """Which data-parallel batch this rank sees: its own under HSDP, its "dp" row's under
    FSDP x TP (the ranks of one tensor-parallel group see the same batch)."""
    return mesh.get_rank() if layout == "hsdp" else mesh.get_coordinate()[0]


def _ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float(((a - b).abs() / (torch.finfo(a.dtype).eps * b.abs().clamp_min(1e-30))).max())


def mesh2d_worker(rank: int, world: int, tmp: str, layout: str) -> None:
    """HSDP and FSDP x TP on a 2 x 2 mesh: clipping (global, per tensor, by value) and the
    non-finite guard equal one process given the gathered gradients of the same global
    batch; a NaN on one rank makes every rank skip (or raise) with nothing changed."""
    _init(rank, world, tmp)
    mesh = _mesh_2d(layout)
    data = _data(_batch_rank(mesh, layout), 5)
    out = {}
    for name, case in MESH_CASES.items():
        model = _model_2d(mesh, layout)
        opt, _, sharded, reference = _sharded_and_one_process(model, case, data)
        out[name] = {
            "exact": all(torch.equal(a, b) for a, b in zip(sharded, reference)),
            "max_ulp": max(_ulps(a, b) for a, b in zip(sharded, reference)),
            "placements": sorted({str(p.placements) for p in model.parameters()}),
        }
    for policy in ("skip", "raise"):
        model = _model_2d(mesh, layout)
        opt = _make(model.parameters(), {"nonfinite": policy, "global_clipnorm": 1.0})
        x, y = data[0]
        torch.nn.functional.mse_loss(model(x), y).backward()
        before = [_full(p).detach().clone() for p in model.parameters()]
        if rank == world - 1:  # one rank alone sees a NaN, in the last tensor's shard
            list(model.parameters())[-1].grad.to_local().view(-1)[0] = float("nan")
        try:
            opt.step()
            raised = None
        except FloatingPointError as err:
            raised = type(err).__name__
        after = [_full(p).detach() for p in model.parameters()]
        out[policy] = {"unchanged": all(torch.equal(a, b) for a, b in zip(before, after)),
                       "skipped": opt.skipped_steps, "raised": raised}  # fmt: skip
    results = [None] * world
    dist.all_gather_object(results, out)
    if rank == 0:
        Path(tmp, f"mesh2d_{layout}.json").write_text(json.dumps(results))
    _finish()


def _reference_groups(model, reference, case: dict) -> list[dict]:
    """The one-process run's parameter groups: ``case``, with float32 state for the runs of
    parameters whose shards keep float32 state (``forms.row_shards``), in the same order
    (so every parameter has the random-stream position it has in the sharded run)."""
    from rmsprop.lowbit.forms import StateForm

    form = StateForm.parse(case.get("state_dtype"))
    groups: list[dict] = []
    for p, r in zip(model.parameters(), reference):
        fallback = form.storage(p) != form.storage(r)
        if not groups or groups[-1]["fallback"] != fallback:
            groups.append({"fallback": fallback, "params": []})
        groups[-1]["params"].append(r)
    return [{"params": g["params"], **({"state_dtype": torch.float32} if g["fallback"] else {})}
            for g in groups]  # fmt: skip


def mesh2d_compact_worker(rank: int, world: int, tmp: str, layout: str) -> None:
    """bf16 and 8-bit state on a 2 x 2 mesh: the fused kernel on the local shards equals
    one process (parameters and state, bit for bit); ColwiseParallel's weight under FSDP x
    TP (``_StridedShard(0)``, ``Shard(0)``) keeps 8-bit state; RowwiseParallel's
    (``Shard(1)``) keeps bf16 state, and float32 under 8-bit (the one process given
    float32 state for it too)."""
    _init(rank, world, tmp)
    mesh = _mesh_2d(layout)
    data = _data(_batch_rank(mesh, layout), 5, width=256)
    out = {}
    for name, case in MESH_COMPACT_CASES.items():
        case = dict(case)
        dtype = case.pop("param_dtype", torch.float32)
        model = _model_2d(mesh, layout, _compact_model().to(dtype))
        params = list(model.parameters())
        reference = [_full(p).detach().clone().requires_grad_() for p in params]
        opt = _make(params, {**case, "impl": "numba"})
        ref_opt = _make(_reference_groups(model, reference, case), {**case, "impl": "numba"})
        for x, y in data:
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype)).backward()
            for p, r in zip(params, reference):
                r.grad = _full(p.grad).clone()
            opt.step()
            ref_opt.step()
        out[name] = {
            "params_exact": all(torch.equal(_full(p), r) for p, r in zip(params, reference)),
            "state_exact": all(
                sorted(opt.state[p]) == sorted(ref_opt.state[r])
                and all(
                    torch.equal(_full(opt.state[p][k]), ref_opt.state[r][k])
                    for k in ref_opt.state[r]
                )
                for p, r in zip(params, reference)
            ),
            "impl": opt.last_impl.get(0),
            "forms": [
                sorted(f"{k}:{v.dtype}" for k, v in opt.state[p].items() if k != "step")
                for p in params
            ],
        }
    results = [None] * world
    dist.all_gather_object(results, out)
    if rank == 0:
        Path(tmp, f"mesh2d_compact_{layout}.json").write_text(json.dumps(results))
    _finish()


# ------------------------------------------------ DCP checkpoints across world sizes
RESHARD_FORMS = {
    "fp32": {"state_dtype": None, "momentum": 0.9, "centered": True},
    "bf16": {"state_dtype": torch.bfloat16, "momentum": 0.9},
    "int8": {"state_dtype": "int8", "momentum": 0.9},
    "int8_centered": {"state_dtype": "int8", "momentum": 0.9, "centered": True},  # grad_var
    "bf16_centered": {"state_dtype": torch.bfloat16, "centered": True},  # grad_var
}


def _reshard_model(world: int) -> torch.nn.Module:
    """``_compact_model()`` laid out for ``world`` ranks: 4, HSDP on a 2 x 2 mesh; 2, FSDP2;
    1, an ordinary module (plain tensors)."""
    model = _compact_model()
    if world == 4:
        return _model_2d(_mesh_2d("hsdp"), "hsdp", model)
    return _shard(model) if world == 2 else model


def _full_gradients(step: int, params) -> list[torch.Tensor]:
    """Step ``step``'s gradients, the same on every world size: each rank makes the full
    tensor and keeps its part (no communication), so the runs differ only in layout."""
    from torch.distributed.tensor import distribute_tensor

    g = torch.Generator().manual_seed(1000 + step)
    grads = []
    for p in params:
        full = torch.randn(p.shape, generator=g) * 0.1
        if hasattr(p, "device_mesh"):
            full = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
        grads.append(full)
    return grads


def reshard_worker(rank: int, world: int, tmp: str, phase: str, source: int = 0) -> None:
    """``phase`` "save": 5 steps of every form of ``RESHARD_FORMS``, a DCP checkpoint of
    each (in ``ckpt{world}_{form}``), 5 steps more (the uninterrupted run). "resume": load
    the checkpoints written on ``source`` ranks, 5 steps. Rank 0 writes, per form, the full
    parameters and state after the checkpoint was loaded (or saved) and at the end."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    _init(rank, world, tmp)
    out = {}
    for name, case in RESHARD_FORMS.items():
        model = _reshard_model(world)
        params = list(model.parameters())
        opt = _make(params, {"lr": 0.01, **case})
        # not 0: a resumed run on seed 0 would round differently. The resumed optimizer
        # starts on 0 and gets 12345 from the checkpoint (it travels in each param group:
        # get_optimizer_state_dict keeps only state and param_groups)
        opt.rounding_seed = 12345 if phase == "save" else 0

        def run(steps, params=params, opt=opt):
            for k in steps:
                for p, g in zip(params, _full_gradients(k, params)):
                    p.grad = g
                opt.step()

        def snapshot(params=params, opt=opt):
            state = [{k: _full(v).clone() for k, v in opt.state[p].items()} for p in params]
            return [_full(p).detach().clone() for p in params], state

        ckpt = str(Path(tmp, f"ckpt{world if phase == 'save' else source}_{name}"))
        if phase == "save":
            run(range(5))
            state = {"model": get_model_state_dict(model),
                     "optim": get_optimizer_state_dict(model, opt)}  # fmt: skip
            dcp.save(state, checkpoint_id=ckpt)
        else:
            run(range(1))  # the state exists (and is overwritten by the load)
            state = {"model": get_model_state_dict(model),
                     "optim": get_optimizer_state_dict(model, opt)}  # fmt: skip
            dcp.load(state, checkpoint_id=ckpt)
            set_model_state_dict(model, state["model"])
            set_optimizer_state_dict(model, opt, state["optim"])
            assert opt.rounding_seed == 12345, opt.rounding_seed
        at_checkpoint = snapshot()
        run(range(5, 10))
        out[name] = (at_checkpoint, snapshot())
    if rank == 0:
        torch.save(out, Path(tmp, f"{phase}{world}_from{source or world}.pt"))
    _finish()


if __name__ == "__main__":  # for manual runs: python tests/dist_workers.py fsdp /tmp/dir
    import torch.multiprocessing as mp

    kind, folder = sys.argv[1], sys.argv[2]
    target = {"fsdp": fsdp_worker, "ddp": ddp_zero_worker}[kind]
    mp.spawn(target, args=(2, folder), nprocs=2, join=True)
