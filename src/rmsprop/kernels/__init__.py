"""Fused back ends behind one dispatch: numba (CPU), Triton (CUDA), torch.compile.

Every back end has the signature of ``rmsprop.optim.functional.rmsprop``'s workers:
``fn(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, *, lr, hp)``.
They are imported lazily: a missing numba or triton never breaks ``import rmsprop``.
"""

from .dispatch import available_backends, choose, unavailable_reason

__all__ = ["available_backends", "choose", "unavailable_reason"]
