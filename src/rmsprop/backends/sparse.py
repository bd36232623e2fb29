"""Sparse gradients (``nn.Embedding(sparse=True)``, ``torch.sparse_coo``).

``"lazy"`` (the default for sparse gradients) updates only the rows present in the
gradient, with TensorFlow's ``SparseApplyRMSProp`` semantics: duplicate indices are summed
first (as TF's Python optimizer does), rows that are absent keep their parameter and
every state tensor unchanged (their momentum does not move them either). The rows are
gathered, updated by the same per-tensor code as the dense path, and scattered back: no
dense gradient and no temporary of the table's size is ever made.

``"dense"`` turns the gradient dense and gives exactly the dense result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Batch, Hyper, to_scalar_lr, upcast
from .single import update_one_


def row_index(grad: Tensor) -> tuple[Tensor, Tensor]:
    """Coalesce ``grad`` (summing duplicates) and return (flat row indices, row values)
    over the first ``sparse_dim`` dimensions of the parameter."""
    grad = grad.coalesce()
    indices, values = grad.indices(), grad.values()
    sparse_shape = grad.shape[: grad.sparse_dim()]
    flat = indices[0]
    for dim in range(1, grad.sparse_dim()):
        flat = flat * sparse_shape[dim] + indices[dim]
    return flat, values


def _rows_view(tensor: Tensor, sparse_dim: int) -> Tensor:
    return tensor.reshape(-1, *tensor.shape[sparse_dim:]) if sparse_dim > 1 else tensor


def lazy_sparse_rmsprop_(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    grad_avg: Tensor | None,
    buf: Tensor | None,
    step: Tensor,
    *,
    lr,
    hp: Hyper,
) -> None:
    """Update the rows of ``param`` present in the sparse ``grad``; steps (1)-(10) per row."""
    sparse_dim = grad.sparse_dim()
    rows, values = row_index(grad)
    targets = [_rows_view(t, sparse_dim) if t is not None else None
               for t in (param, square_avg, grad_avg, buf)]  # fmt: skip
    gathered = [t.index_select(0, rows) if t is not None else None for t in targets]
    p_rows, v_rows, m_rows, b_rows = gathered
    with upcast((p_rows, values, v_rows, m_rows, b_rows)) as (p, g, v, m, b):
        update_one_(p, g, v, m, b, step, to_scalar_lr(lr), hp)
    for target, new in zip(targets, gathered):
        if target is not None:
            target.index_copy_(0, rows, new)


def step(batch: Batch, lr, hp: Hyper) -> None:
    """Each tensor of the batch (float state, sparse gradients) updated lazily by rows."""
    for p, g, v, m, b, step_ in zip(batch.params, batch.grads, *batch.buffers(hp), batch.steps):
        lazy_sparse_rmsprop_(p, g, v, m, b, step_, lr=lr, hp=hp)


def densify(grad: Tensor) -> Tensor:
    """``sparse_mode="dense"``: the exact dense gradient."""
    return grad.to_dense() if grad.is_sparse else grad


def is_sparse(grad: Tensor) -> bool:
    return grad.layout == torch.sparse_coo
