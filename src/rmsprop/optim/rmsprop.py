"""``rmsprop.RMSprop``: a drop-in for ``torch.optim.RMSprop`` with every framework's switches.

The class holds the parameter groups and their state (torch's conventions) and reads as
the step it runs: plan and check every group (``planner``), guard against non-finite
gradients, clip (``clipping``), execute each plan (``executor``, which hands the tensors
to the back end the plan chose: ``rmsprop.backends``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _get_scalar_dtype

from .._dtensor import is_dtensor
from .._torch_compile import outside_compile, step_grad_mode
from .._validation import check_choice, unknown_arguments
from ..algorithm import ALGORITHM
from ..backends.base import Hyper
from ..lowbit.forms import StateForm
from ..lowbit.state import conform
from ..presets import get_preset
from .clipping import any_nonfinite, clip_gradients, needs_reduction
from .executor import execute
from .export import torch_state_dict
from .planner import STEP_DTYPES, Plan, PlanSummary, gather, plan_tensors
from .settings import Settings
from .validation import GROUP_KEYS, RUNTIME_KEYS, check_group, check_nonfinite, check_params


class RMSprop(Optimizer):
    r"""RMSprop with every framework's variant; a drop-in for ``torch.optim.RMSprop``.

    With torch's arguments it runs ``torch.optim.RMSprop``'s algorithm. With
    ``foreach=False`` (torch's CPU path) or ``foreach=True`` it performs the same operations
    in the same order: results are equal bit for bit. The default ``impl="auto"`` runs a
    fused kernel where one can take the tensors; it rounds the square root correctly, which
    torch's vectorised CPU kernel does not always, so it agrees with torch to about one ulp
    per step. ``state_dict`` uses torch's keys (``step``, ``square_avg``,
    ``momentum_buffer``, ``grad_avg``), so checkpoints move both ways. The keyword-only
    switches reproduce Keras, TF1, optax and timm exactly; the easiest way to set them is
    :meth:`from_preset`.

    Each step checks every group's parameters, gradients and state before anything is
    written, so a step that raises changes nothing; ``last_impl[i]`` names the
    implementation group ``i`` last ran on and ``last_plan[i]`` says how (and why ``auto``
    passed faster ones over).

    The algorithm is the numbered box ``rmsprop.ALGORITHM`` (its step numbers appear as
    comments in every implementation).

    Args:
      params: parameters or parameter groups (dicts may set any argument below per group).
      lr: learning rate (default 1e-2): a float or a 1-element tensor.
      alpha: decay of the moving averages, in [0, 1) (default 0.99).
      eps: added to the denominator (default 1e-8).
      weight_decay: λ (default 0): coupled L2 unless ``decoupled_weight_decay``.
      momentum: heavy-ball momentum in [0, 1) (default 0).
      centered: divide by the root of the variance ``v - ḡ²`` (default False).
      capturable: as in ``torch.optim.RMSprop`` (the step counter stays on the device).
      foreach: as in ``torch.optim.RMSprop``: ``True`` or ``False`` pins torch's foreach or
        for-loop path (bit for bit with torch's); ``None`` (default) lets ``impl`` choose.
      maximize: ascend instead of descend (as in ``torch.optim.RMSprop``).
      differentiable: as in ``torch.optim.RMSprop`` (runs the single-tensor path).
      eps_in_sqrt: ``sqrt(v + eps)`` (Keras, TF1, optax, timm) instead of ``sqrt(v) + eps``.
      initial_accumulator_value: start of ``square_avg`` (TF1, timm ``RMSpropTF``: 1).
      nesterov: Nesterov momentum (optax); needs ``momentum > 0``.
      lr_in_momentum: the lr multiplies the gradient before the buffer (TF1, Keras, optax,
        timm); by default the buffer is multiplied by the lr (torch).
      decoupled_weight_decay: ``θ ← θ(1 − lr·λ)`` before the step (Keras 3, timm
        ``decoupled_decay``) instead of ``g ← g + λθ``.
      bias_correction: divide the averages by ``1 − alphaᵗ`` (optax).
      clipvalue: Keras's clipping of each gradient element to ``[-clipvalue, clipvalue]``
        (at most one of the three clipping arguments; ``p.grad`` itself is not modified).
      clipnorm: Keras's clipping of each gradient to this norm.
      global_clipnorm: Keras's clipping of the parameter group's gradients together to
        this norm.
      impl: ``"auto"``, ``"single"``, ``"foreach"``, ``"numba"``, ``"triton"`` or
        ``"compiled"``. ``"auto"`` takes the first of triton, numba, foreach (CUDA), single
        whose checks pass for the group's tensors, preferring one that takes them all as
        stored; an explicit choice that cannot run raises before any write and says why.
        A tensor an implementation does not take as stored (fp16 parameters in numba, a
        gradient of another dtype, state in another form) runs on working copies.
      state_dtype: ``None`` (the parameter's dtype, as torch), ``torch.float32``,
        ``torch.bfloat16`` (2 bytes per buffer, written with stochastic rounding) or
        ``"int8"`` (blockwise 8-bit codes with one fp32 scale per 256 elements for tensors of
        at least 4,096 elements: ~1.02 bytes per buffer; see ``rmsprop.lowbit.codecs``). The
        math is fp32 whatever the storage (fp64 for fp64 params); numba and Triton decode,
        update and encode in one pass.
      stochastic_rounding: bf16 parameters are written back with stochastic rounding
        (pure-bf16 training: updates smaller than half a bf16 ulp survive on average); the
        math is fp32, fused in numba and Triton with fp32, bf16 or int8 state.
      nonfinite: ``"update"`` (torch: NaN/Inf flow into the update; with int8 state they
        stay out of their block's scale, so the block's other elements keep their state),
        ``"skip"`` (a step with a non-finite gradient changes nothing and is counted in
        ``skipped_steps``) or ``"raise"`` (``FloatingPointError`` before anything changes).
      ema_form: ``"torch"``, ``"multiply"`` or ``"delta"``: how the averages are written
        (the same math; the last bits of a framework). See ``rmsprop.algorithm``.
      centered_clamp: clamp ``v − ḡ²`` at 0 so rounding cannot make the centered sqrt NaN.
      sparse_mode: for sparse gradients, ``"lazy"`` (default: only the rows present are
        updated, TF ``SparseApplyRMSProp`` semantics) or ``"dense"`` (exactly dense).

    Differences from torch.optim.RMSprop:
      Same results with the same arguments, except: fp16/bf16 parameters are updated with
      fp32 math (torch computes in fp16, where a gradient of 300 squared overflows);
      ``alpha`` and ``momentum`` must be below 1 (torch accepts any value >= 0); turning
      ``momentum`` or ``centered`` on after the first step works (torch raises KeyError);
      sparse gradients are supported (torch raises).

    Differences from Keras / TF1 / optax / timm:
      None in the algorithm, with the preset's switches (``from_preset``): Keras's
      ``rho`` is ``alpha``, TF1/optax ``decay`` is ``alpha``, optax ``initial_scale`` is
      ``initial_accumulator_value``, timm ``decoupled_decay`` is ``decoupled_weight_decay``.
      Keras stores a float lr in a float32 variable; TF1 turns Python-float
      hyperparameters into float32 tensors: in float64 this library uses your values as given.

    Examples:
      >>> import torch, rmsprop
      >>> model = torch.nn.Linear(3, 1)
      >>> opt = rmsprop.RMSprop(model.parameters(), lr=0.01)            # torch.optim.RMSprop
      >>> opt = rmsprop.RMSprop.from_preset(model.parameters(), "tf1", lr=0.01, momentum=0.9)
      >>> model(torch.ones(2, 3)).sum().backward(); opt.step(); opt.zero_grad()
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> RMSprop:
        """Python's own error for an unknown keyword names no alternative; this one says
        when it is another framework's name (``rho`` is ``alpha`` here) or a typo."""
        message = unknown_arguments(kwargs, _ARGUMENTS, "RMSprop()")
        if message is not None:
            raise TypeError(message)
        return super().__new__(cls)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        eps_in_sqrt: bool = False,
        initial_accumulator_value: float = 0.0,
        nesterov: bool = False,
        lr_in_momentum: bool = False,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = False,
        clipvalue: float | None = None,
        clipnorm: float | None = None,
        global_clipnorm: float | None = None,
        impl: str = "auto",
        state_dtype: torch.dtype | None = None,
        nonfinite: str = "update",
        ema_form: str = "torch",
        centered_clamp: bool = False,
        sparse_mode: str | None = None,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = check_group(
            {
                "lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                "momentum": momentum, "centered": centered, "capturable": capturable,
                "foreach": foreach, "maximize": maximize, "differentiable": differentiable,
                "eps_in_sqrt": eps_in_sqrt, "initial_accumulator_value": initial_accumulator_value,
                "nesterov": nesterov, "lr_in_momentum": lr_in_momentum,
                "decoupled_weight_decay": decoupled_weight_decay, "bias_correction": bias_correction,
                "clipvalue": clipvalue, "clipnorm": clipnorm, "global_clipnorm": global_clipnorm,
                "impl": impl, "state_dtype": state_dtype, "ema_form": ema_form,
                "centered_clamp": centered_clamp, "sparse_mode": sparse_mode,
                "stochastic_rounding": stochastic_rounding,
            }
        )  # fmt: skip
        self.nonfinite = check_nonfinite(nonfinite)
        self.skipped_steps = 0
        self.rounding_seed = 0  # the stochastic-rounding stream of bf16 state (saved in state_dict)
        self.last_impl: dict[int, str] = {}  # group -> the back end its last step ran
        self.last_plan: dict[int, PlanSummary] = {}  # group -> what its last step ran, and why
        super().__init__(params, defaults)

    @classmethod
    def from_preset(cls, params: Iterable[Any], name: str, **overrides: Any) -> RMSprop:
        """The optimizer with preset ``name``'s switches (``rmsprop.PRESETS``); overrides win.

        Examples:
          >>> import torch, rmsprop
          >>> opt = rmsprop.RMSprop.from_preset([torch.zeros(3, requires_grad=True)], "keras", lr=0.1)
        """
        return cls(params, **get_preset(name).hyperparameters(**overrides))

    # ------------------------------------------------------------------ groups and state
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's, with the group's settings and parameters checked first (a parameter
        listed twice is kept once, with torch's warning); a refused group is not added."""
        outside_compile(Optimizer.add_param_group)(self, param_group)
        try:
            group = check_group(self.param_groups[-1])
            check_params(group, len(self.param_groups) - 1)
        except (TypeError, ValueError, ImportError):
            self.param_groups.pop()
            raise
        self.param_groups[-1] = group

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``Optimizer.zero_grad``: every parameter's gradient set to None (or, with
        ``set_to_none=False``, to zero)."""
        if torch.compiler.is_compiling():
            return super().zero_grad(set_to_none)
        return outside_compile(Optimizer.zero_grad)(self, set_to_none)

    def __getstate__(self) -> dict[str, Any]:
        """What pickle and ``copy.deepcopy`` keep: torch's, and this optimizer's settings."""
        return {**super().__getstate__(), "nonfinite": self.nonfinite,
                "skipped_steps": self.skipped_steps, "rounding_seed": self.rounding_seed}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "update")
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("rounding_seed", 0)
        self.__dict__.setdefault("last_impl", {})
        self.__dict__.setdefault("last_plan", {})
        for group in self.param_groups:
            for key in GROUP_KEYS:
                group.setdefault(key, self.defaults[key])
            for p in group["params"]:
                st = self.state.get(p, {})
                if st and "step" in st and not torch.is_tensor(st["step"]):
                    st["step"] = torch.tensor(float(st["step"]), dtype=_get_scalar_dtype())

    def state_dict(self, *, format: str = "rmsprop") -> dict[str, Any]:
        """torch's ``state_dict``, with ``skipped_steps`` and ``rounding_seed`` (at the top
        and in each group: ``torch.distributed.checkpoint``'s ``get_optimizer_state_dict``
        keeps only ``state`` and ``param_groups``, and a bf16/int8 run must resume on its
        random stream); state in the optimizer's own form (bf16 or 8-bit buffers stay
        compact). ``format="torch"``:
        what ``torch.optim.RMSprop.load_state_dict`` takes and continues from (every
        buffer decoded to the parameter's dtype under torch's keys; ``ValueError`` for a
        group whose switches torch does not have)."""
        check_choice("format", format, ("rmsprop", "torch"))
        sd = super().state_dict()
        if format == "torch":
            params = [p for group in self.param_groups for p in group["params"]]
            return torch_state_dict(sd, params)
        counters = {key: getattr(self, key) for key in COUNTERS}
        sd.update(counters)
        sd["param_groups"] = [{**group, **counters} for group in sd["param_groups"]]
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, after checking the checkpoint against the parameters: a mismatch
        raises ``ValueError`` and leaves the optimizer as it was. The optimizer keeps its
        own ``impl``, ``foreach`` and ``state_dtype`` (how to run and store on this machine)
        and converts the loaded state to its ``state_dtype`` (int8 codes are decoded, bf16 is
        widened exactly or written with stochastic rounding); every hyperparameter and
        switch comes from the checkpoint."""
        from ._checkpoint import check_state_dict

        check_state_dict(self, state_dict)
        runtime = [{k: g[k] for k in RUNTIME_KEYS} for g in self.param_groups]
        saved = {}  # param -> its saved entry, before torch casts floats to the param dtype
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups):
            for pid, p in zip(saved_group["params"], group["params"]):
                if pid in state_dict["state"]:
                    saved[p] = state_dict["state"][pid]
        super().load_state_dict(state_dict)
        counters = (
            {**state_dict["param_groups"][0], **state_dict}
            if state_dict["param_groups"]
            else state_dict
        )
        self.skipped_steps = int(counters.get("skipped_steps", 0))
        self.rounding_seed = int(counters.get("rounding_seed", 0))
        for group, kept in zip(self.param_groups, runtime):  # how to run is not in a checkpoint
            group.update(kept)
            for key in COUNTERS:  # the optimizer's, not a group's (saved in each for DCP)
                group.pop(key, None)
        for first, group in zip(self._first_salts(), self.param_groups):
            for i, p in enumerate(group["params"]):
                if p in saved:
                    self._adopt_saved(p, group, saved[p], first + i)

    def _adopt_saved(self, p: Tensor, group: dict[str, Any], entry: dict[str, Any],
                     salt: int) -> None:  # fmt: skip
        """Keep the saved buffers' own dtypes (torch casts them to the parameter's) laid out
        like the parameter, then convert each buffer to this group's form if it is in
        another."""
        state, form = self.state[p], StateForm.parse(group["state_dtype"])
        for key, value in entry.items():
            if key != "step" and torch.is_tensor(value):
                state[key] = _laid_out_like(p, value.to(device=p.device))
        step = state.get("step")
        if step is not None and not (torch.is_tensor(step) and step.dtype in STEP_DTYPES):
            device = step.device if torch.is_tensor(step) else None  # torch's: a float tensor
            state["step"] = torch.tensor(float(step), dtype=_get_scalar_dtype(), device=device)
        conform(state, p, form, Hyper.from_group(group), self.rounding_seed, salt)

    def _first_salts(self) -> list[int]:
        """Each group's first random-stream position: a parameter's stochastic-rounding
        streams are numbered by its position among all the optimizer's parameters."""
        sizes = [len(group["params"]) for group in self.param_groups]
        return [sum(sizes[:i]) for i in range(len(sizes))]

    # ------------------------------------------------------------------ the step
    @step_grad_mode
    def step(self, closure=None):  # type: ignore[override]
        """One optimization step. ``closure`` re-evaluates the model and returns the loss.

        Every group is planned and checked before anything is written, so a step that
        raises changes nothing: no parameter, state tensor or counter."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plans = self._plan()  # every group checked: nothing written yet
        if not self._gradients_pass(plans):  # nonfinite="skip"/"raise", on the raw gradients
            return loss
        for plan, first_salt in zip(plans, self._first_salts()):
            grads = clip_gradients(plan.grads, plan.settings)  # (2)
            execute(plan, grads, self.state, self.rounding_seed, first_salt)  # (1), (3)-(10)
            self.last_impl[plan.index], self.last_plan[plan.index] = plan.impl, plan.summary()
        return loss

    def _plan(self) -> list[Plan]:
        plans = []
        for i, group in enumerate(self.param_groups):
            settings = Settings.from_group(group)
            owners, positions, grads = gather(group["params"], settings)
            reduce = needs_reduction(settings, self.nonfinite)
            plans.append(plan_tensors(i, settings, owners, positions, grads, self.state, reduce))
        return plans

    def _gradients_pass(self, plans: list[Plan]) -> bool:
        """Under ``nonfinite="skip"``/``"raise"``: are all gradients finite, on every rank?
        A skipped step is counted; ``"raise"`` raises. Nothing else changes either way."""
        if self.nonfinite == "update" or not any_nonfinite([g for p in plans for g in p.grads]):
            return True
        if self.nonfinite == "raise":
            raise FloatingPointError(
                "a gradient contains NaN or Inf; nothing was updated (nonfinite='raise')"
            )
        self.skipped_steps += 1
        return False


#: the constructor's arguments (``__new__`` checks the names; the signature stays __init__'s)
RMSprop.__signature__ = inspect.signature(RMSprop.__init__).replace(
    parameters=list(inspect.signature(RMSprop.__init__).parameters.values())[1:]
)
_ARGUMENTS = tuple(RMSprop.__signature__.parameters)

# ``help(rmsprop.RMSprop)`` shows the box itself where the docstring names it (the site's
# API page reads the docstring from the source; the box has its own page there)
RMSprop.__doc__ = RMSprop.__doc__.replace(
    "in every implementation).",
    "in every implementation)::\n\n"
    + "\n".join("        " + line for line in ALGORITHM.splitlines()),
    1,
)


#: the optimizer's own counters, saved with its state (``state_dict``)
COUNTERS = ("skipped_steps", "rounding_seed")


def _laid_out_like(p: Tensor, value: Tensor) -> Tensor:
    """``value`` with ``p``'s strides (a checkpoint from a channels_last model loaded into a
    contiguous one): the same values, a layout every implementation reads directly."""
    if is_dtensor(p) or value.shape != p.shape or value.stride() == p.stride():
        return value
    return torch.empty_like(p, dtype=value.dtype).copy_(value)
