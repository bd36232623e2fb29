"""The PyTorch side: ``RMSprop`` (a ``torch.optim.Optimizer``) and the functional API."""

from .functional import rmsprop
from .rmsprop import RMSprop

__all__ = ["RMSprop", "rmsprop"]

from . import checkpoint

__all__ += ["checkpoint"]
