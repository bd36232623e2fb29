"""torch.distributed on CPU: 2 ranks, gloo, a file rendezvous (no network), bounded in time.

Each check compares the distributed run with a single-process run of the same optimizer
on the same gradients (gathered), so it tests the optimizer, not the rounding of the
gradient reduction."""

from __future__ import annotations

import json

import pytest
import torch

dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch built without distributed", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

import dist_workers  # noqa: E402

WORLD = 2


def _spawn(fn, tmp_path, *args):
    (tmp_path / "rendezvous").unlink(missing_ok=True)
    mp.spawn(fn, args=(WORLD, str(tmp_path), *args), nprocs=WORLD, join=True)


@pytest.mark.timeout(300)
def test_fsdp2_shards_update_exactly_like_one_process(tmp_path, compile_in_place):
    """(auto is checked running the fused kernel on the shards: the workers compile it in
    place rather than run the stand-in while it compiles)"""
    _spawn(dist_workers.fsdp_worker, tmp_path)
    results = json.loads((tmp_path / "fsdp.json").read_text())
    for rank, out in enumerate(results):
        for case, r in out.items():
            if case == "skip":
                assert r == {"unchanged": True, "skipped": 1}, f"rank {rank}: skip not agreed"
            elif "clipnorm" in case:  # a norm summed across ranks: within 1 ulp
                assert r["max_ulp"] <= 1.0, (rank, case, r)
            else:
                assert r["exact"], (rank, case, r)
        assert out["auto_plain"]["impl"] == "numba"  # the fused kernel ran on the local shards


@pytest.mark.timeout(300)
def test_fsdp2_compact_state_updates_exactly_like_one_process(tmp_path, compile_in_place):
    """bf16 and 8-bit state under FSDP2: each rank keeps its shard's compact state as
    DTensors; the fused kernel updates the local shards; the random stream follows the
    global element, the blocks are whole rows, so parameters and state equal a
    one-process run bit for bit."""
    _spawn(dist_workers.compact_worker, tmp_path)
    results = json.loads((tmp_path / "compact.json").read_text())
    for rank, out in enumerate(results):
        for case in dist_workers.COMPACT_CASES:
            expected = {"params_exact": True, "state_keys": True, "state_exact": True,
                        "impl": "numba", "state_is_dtensor": True}  # fmt: skip
            assert out[case] == expected, (rank, case, out[case])
        assert out["misaligned"] == ["square_avg"] and out["misaligned_dtype"] == "torch.float32"


@pytest.mark.timeout(300)
def test_ddp_and_zero_redundancy_optimizer(tmp_path):
    _spawn(dist_workers.ddp_zero_worker, tmp_path)
    out = json.loads((tmp_path / "ddp.json").read_text())
    assert out["ddp"] == {"equal_to_single_process": True, "ranks_agree": True}
    assert out["zero"] == {"equal_to_single_process": True, "ranks_agree": True}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("state_dtype", ["none", "int8"])
def test_distributed_checkpoint_save_restart_resume_is_exact(tmp_path, state_dtype):
    for phase in ("save", "resume", "straight"):  # each phase: new processes
        _spawn(dist_workers.dcp_worker, tmp_path, phase, state_dtype)
    resumed = torch.load(tmp_path / "resume.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(resumed, straight))


def _spawn_world(fn, tmp_path, world, *args):
    (tmp_path / "rendezvous").unlink(missing_ok=True)
    mp.spawn(fn, args=(world, str(tmp_path), *args), nprocs=world, join=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("layout", ["hsdp", "fsdp_tp"])
def test_2d_mesh_clipping_and_nonfinite_equal_one_process(tmp_path, layout):
    """4 ranks on a 2 x 2 mesh (HSDP: (replicate, shard); FSDP x TP: ColwiseParallel /
    RowwiseParallel over "tp", fully_shard over "dp"): global_clipnorm, clipnorm, clipvalue
    and the unclipped step equal one process on the gathered gradients of the same global
    batch, bit for bit; a NaN on one rank makes every rank skip, or raise, with nothing
    changed. (Until now a 2-D mesh raised a RuntimeError in these features.)"""
    _spawn_world(dist_workers.mesh2d_worker, tmp_path, 4, layout)
    results = json.loads((tmp_path / f"mesh2d_{layout}.json").read_text())
    for rank, out in enumerate(results):
        for case in dist_workers.MESH_CASES:
            assert out[case]["exact"], (layout, rank, case, out[case])
        assert out["skip"] == {"unchanged": True, "skipped": 1, "raised": None}, (rank, out)
        assert out["raise"] == {"unchanged": True, "skipped": 0, "raised": "FloatingPointError"}
    placements = {p for case in dist_workers.MESH_CASES for p in results[0][case]["placements"]}
    if layout == "hsdp":
        assert placements == {"(Replicate(), Shard(dim=0))"}
    else:  # sharded twice, row-wise sharded, and replicated over "tp" (the second bias)
        assert {"(Shard(dim=0), Shard(dim=1))", "(Shard(dim=0), Replicate())"} <= placements


def _same(a, b) -> bool:
    """Equal structures of tensors, bit for bit (dtypes and keys included)."""
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return sorted(a) == sorted(b) and all(_same(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_distributed_checkpoint_reshards_every_state_form(tmp_path):
    """DCP across world sizes, for fp32, bf16 (stochastic rounding), int8 blocks with their
    scales and the centered variance form (int8 and bf16 grad_var): saved on 4 ranks (HSDP,
    2 x 2) and on 1 process, loaded on 2 (FSDP2) and 1 (plain tensors) and on 2 and 4. The
    loaded parameters and state equal the saved ones, and 5 steps more equal the
    uninterrupted run, bit for bit: the 8-bit scales are row-sharded like their codes and
    the random stream follows the global element, whatever the layout."""
    _spawn_world(dist_workers.reshard_worker, tmp_path, 4, "save")
    _spawn_world(dist_workers.reshard_worker, tmp_path, 1, "save")
    loads = [(2, 4), (1, 4), (2, 1), (4, 1)]
    for world, source in loads:
        _spawn_world(dist_workers.reshard_worker, tmp_path, world, "resume", source)
    saved = {w: torch.load(tmp_path / f"save{w}_from{w}.pt", weights_only=True) for w in (4, 1)}
    for form in dist_workers.RESHARD_FORMS:  # 4 ranks == 1 process, when saved and after
        assert _same(saved[4][form], saved[1][form]), form
    keys = {form: sorted(saved[1][form][0][1][0]) for form in dist_workers.RESHARD_FORMS}
    assert keys["int8"] == ["momentum_buffer_codes", "momentum_buffer_scale", "square_avg_codes",
                            "square_avg_scale", "step"]  # fmt: skip
    assert "grad_var_codes" in keys["int8_centered"] and "grad_var" in keys["bf16_centered"]
    assert saved[1]["bf16"][0][1][0]["square_avg"].dtype == torch.bfloat16
    for world, source in loads:
        resumed = torch.load(tmp_path / f"resume{world}_from{source}.pt", weights_only=True)
        for form in dist_workers.RESHARD_FORMS:
            at_checkpoint, final = resumed[form]
            assert _same(at_checkpoint, saved[source][form][0]), (world, source, form)
            assert _same(final, saved[1][form][1]), (world, source, form)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("layout", ["hsdp", "fsdp_tp"])
def test_2d_mesh_compact_state_equals_one_process(tmp_path, layout, compile_in_place):
    """bf16 and 8-bit state on a 2 x 2 mesh, the fused kernel on the local shards: the
    parameters and state equal one process bit for bit (each shard's random stream starts
    at its global offset). Under FSDP x TP, ColwiseParallel's weight (_StridedShard(0) and
    Shard(0): whole rows) keeps 8-bit state (it fell back to float32 before) and
    RowwiseParallel's (Shard(1): columns) keeps bf16 state (it fell back to float32
    before; before that it drew on overlapping parts of the stream), each element rounded
    from its own global place of the stream, as are bf16 parameters written back with
    stochastic rounding (they drew overlapping ranges before, rank after rank)."""
    _spawn_world(dist_workers.mesh2d_compact_worker, tmp_path, 4, layout)
    results = json.loads((tmp_path / f"mesh2d_compact_{layout}.json").read_text())
    for rank, out in enumerate(results):
        for case in dist_workers.MESH_COMPACT_CASES:
            r = out[case]
            assert (r["params_exact"], r["state_exact"], r["impl"]) == (True, True, "numba"), (
                layout, rank, case, r)  # fmt: skip
            if case.startswith("int8"):  # the 32 x 256 weight: 8-bit blocks on every layout
                assert "momentum_buffer_codes:torch.uint8" in r["forms"][0], (layout, r["forms"])
        bf16 = out["bf16_momentum_centered"]["forms"]
        assert bf16[0] == ["grad_avg:torch.bfloat16", "grad_var:torch.bfloat16",
                           "momentum_buffer:torch.bfloat16"]  # fmt: skip
        assert all("bfloat16" in f for f in bf16[2]), bf16[2]  # RowwiseParallel's columns too
