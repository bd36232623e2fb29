"""Sparse gradients: lazy row updates (TF SparseApplyRMSProp semantics) and exact dense mode."""

from __future__ import annotations

import resource

import pytest
import torch

import rmsprop


def sparse_grad(rows: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape)


@pytest.mark.parametrize("config", [{}, {"momentum": 0.9, "centered": True},
                                    {"preset": "tf1", "lr": 0.01, "momentum": 0.9}])  # fmt: skip
def test_lazy_updates_only_present_rows_and_sums_duplicates(config):
    torch.manual_seed(0)
    table = torch.randn(1000, 8, requires_grad=True)
    twin_rows = None
    config = dict(config)
    preset = config.pop("preset", None)
    config["impl"] = "single"  # the lazy rows run the single-tensor code: compare like with like
    make = (
        (lambda ps: rmsprop.RMSprop.from_preset(ps, preset, **config))
        if preset
        else (lambda ps: rmsprop.RMSprop(ps, **config))
    )
    opt = make([table])
    initial = table.detach().clone()
    rows = torch.tensor([3, 17, 3, 999, 17, 3])  # duplicates
    values = torch.randn(6, 8)
    table.grad = sparse_grad(rows, values, table.shape)
    opt.step()
    untouched = torch.ones(1000, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(table.detach()[untouched], initial[untouched])
    state = opt.state[table]
    v0 = 1.0 if preset == "tf1" else 0.0
    assert torch.all(state["square_avg"][untouched] == v0)
    for key in ("momentum_buffer", "grad_avg"):
        if key in state:
            assert torch.all(state[key][untouched] == 0)
    # the present rows get exactly the dense update of the summed gradient
    unique = torch.tensor([3, 17, 999])
    summed = torch.zeros(3, 8).index_add_(0, torch.tensor([0, 1, 0, 2, 1, 0]), values)
    twin_rows = initial[unique].clone().requires_grad_()
    twin = make([twin_rows])
    twin_rows.grad = summed
    twin.step()
    assert torch.equal(table.detach()[unique], twin_rows.detach())


def test_lazy_momentum_does_not_move_absent_rows():
    table = torch.zeros(10, 2, requires_grad=True)
    opt = rmsprop.RMSprop([table], lr=0.1, momentum=0.9)
    table.grad = sparse_grad(torch.tensor([1]), torch.ones(1, 2), table.shape)
    opt.step()
    moved = table.detach()[1].clone()
    table.grad = sparse_grad(torch.tensor([2]), torch.ones(1, 2), table.shape)
    opt.step()
    assert torch.equal(table.detach()[1], moved)  # dense momentum would keep moving row 1


@pytest.mark.parametrize("config", [{}, {"momentum": 0.9, "centered": True, "weight_decay": 0.1}])
def test_dense_mode_is_exactly_the_dense_result(config):
    torch.manual_seed(1)
    a = torch.randn(50, 4, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    opt_a = rmsprop.RMSprop([a], sparse_mode="dense", **config)
    opt_b = rmsprop.RMSprop([b], **config)
    for _ in range(3):
        grad = sparse_grad(torch.randint(0, 50, (20,)), torch.randn(20, 4), a.shape)
        a.grad, b.grad = grad, grad.to_dense()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)
    assert torch.equal(opt_a.state[a]["square_avg"], opt_b.state[b]["square_avg"])


def test_embedding_module_end_to_end():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(100, 4, sparse=True)
    opt = rmsprop.RMSprop(emb.parameters(), lr=0.01)
    before = emb.weight.detach().clone()
    ids = torch.tensor([[1, 2, 2], [5, 1, 7]])
    emb(ids).sum().backward()
    assert emb.weight.grad.is_sparse
    opt.step()
    changed = (emb.weight.detach() != before).any(1).nonzero().flatten().tolist()
    assert changed == [1, 2, 5, 7]
    with pytest.raises(RuntimeError, match="does not support sparse"):
        torch.optim.RMSprop(emb.parameters()).step()


def test_lazy_step_on_a_large_table_makes_no_dense_temporary():
    """1,000,000 x 64 fp32 (256 MB): a lazy step with 4,096 rows raises the peak RSS by far
    less than one table-sized temporary would."""
    rows, dim = 1_000_000, 64
    table = torch.zeros(rows, dim, requires_grad=True)
    opt = rmsprop.RMSprop([table], lr=0.01, momentum=0.9)
    ids = torch.randint(0, rows, (4096,))
    table.grad = sparse_grad(ids, torch.ones(4096, dim), table.shape)
    opt.step()  # the first step allocates the state: 3 tables in all
    assert int((table.detach() != 0).any(1).sum()) == len(torch.unique(ids))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    opt.step()
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert (peak_after - peak_before) * 1024 < 64 * 2**20
