"""What ``torch.compile`` needs from the optimizer, without importing ``torch._dynamo``
before a program compiles (that import takes about 1.5 s; torch.optim's step wrapper and
``torch.compiler.disable`` both make it, so a program's first step paid it).

- ``step_grad_mode``: the step's autograd mode and graph breaks, as torch.optim's
  ``_use_grad_for_differentiable`` sets them.
- ``opaque_to_dynamo``: a function dynamo calls as it is instead of tracing it (numba's
  kernels), as ``torch.compiler.disable`` does.
- ``outside_compile``: one of ``torch.optim.Optimizer``'s methods that torch wraps to be
  opaque to dynamo (``add_param_group``, ``zero_grad``), for calls made while nothing
  compiles: the method itself, without the wrapper that imports dynamo.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _graph_break() -> None:
    import torch._dynamo  # imported already: only called while dynamo traces

    torch._dynamo.graph_break()


def step_grad_mode(step: F) -> F:
    """``optimizer.step`` with autograd recording only when the group's defaults say
    ``differentiable=True``, and, under ``torch.compile``, a graph break before and after
    the step (so the compiled graph sees the step as an in-place inference update: torch's
    reason, pytorch/pytorch#104053). Outside torch.compile, nothing else."""

    @functools.wraps(step)
    def run(self, *args: Any, **kwargs: Any) -> Any:
        recording = torch.is_grad_enabled()
        compiling = torch.compiler.is_compiling()
        try:
            torch.set_grad_enabled(self.defaults["differentiable"])
            if compiling:
                _graph_break()
            return step(self, *args, **kwargs)
        finally:
            if compiling:
                _graph_break()
            torch.set_grad_enabled(recording)

    return run  # type: ignore[return-value]


def opaque_to_dynamo(fn: F) -> F:
    """``fn`` run as it is under ``torch.compile`` (dynamo does not trace into it), with
    ``torch._dynamo`` imported at its first call rather than here: torch's own lazy form of
    ``torch.compiler.disable`` (``torch._disable_dynamo``), which its optimizers use."""
    return torch._disable_dynamo(fn)  # type: ignore[return-value]


def outside_compile(method: F) -> F:
    """``method`` (a method of ``torch.optim.Optimizer``) without its lazy
    ``torch._disable_dynamo`` wrapper, to call when ``torch.compiler.is_compiling()`` is
    False: the wrapper only matters while dynamo traces, and its first call imports
    ``torch._dynamo``. The method as it is where torch did not wrap it."""
    return getattr(method, "__wrapped__", method)
