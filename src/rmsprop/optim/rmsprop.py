"""``rmsprop.RMSprop``: a drop-in for ``torch.optim.RMSprop`` with every framework's switches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _get_scalar_dtype, _use_grad_for_differentiable

from .._dtensor import any_dtensor
from .._validation import NON_NEGATIVE, check_choice, check_real, validate_hyperparameters
from ..algorithm import ALGORITHM
from ..kernels.dispatch import backend
from ..lowbit.codecs import stochastic_round_to_bf16, stream_seed
from ..lowbit.state import (
    BUFFERS,
    COMPACT,
    buffers_in_use,
    decode,
    encode,
    first_element,
    has,
    in_form,
)
from ..presets import get_preset
from ._common import Hyper
from ._distributed import any_nonfinite, clip_scale, is_dtensor, local, squared_norms
from ._sparse import densify, is_sparse, lazy_sparse_rmsprop_
from .functional import IMPLS
from .functional import rmsprop as functional_rmsprop

STATE_DTYPES = (None, torch.float32, torch.bfloat16, "int8")
SPARSE_MODES = (None, "lazy", "dense")
GROUP_KEYS = (
    "lr", "alpha", "eps", "weight_decay", "momentum", "centered", "capturable", "foreach",
    "maximize", "differentiable", "eps_in_sqrt", "initial_accumulator_value", "nesterov",
    "lr_in_momentum", "decoupled_weight_decay", "bias_correction", "clipvalue", "clipnorm",
    "global_clipnorm", "impl", "state_dtype", "ema_form", "centered_clamp", "sparse_mode",
    "stochastic_rounding",
)  # fmt: skip
STATE_KEYS = ("step", "square_avg", "momentum_buffer", "grad_avg",
              *(f"{b}_{part}" for b in BUFFERS for part in ("codes", "scale")))  # fmt: skip
#: How to run and how to store state belong to the machine, not the checkpoint:
#: load_state_dict keeps the optimizer's own values (and converts the state to its state_dtype).
RUNTIME_KEYS = ("impl", "foreach", "state_dtype")


def check_torch_lr(lr: Any) -> float | Tensor:
    """A float >= 0, or a 1-element tensor >= 0 (as torch accepts)."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr: a Tensor lr must have 1 element, got shape {tuple(lr.shape)}")
        check_real("lr", float(lr.detach().reshape(())), NON_NEGATIVE)
        return lr
    return check_real("lr", lr, NON_NEGATIVE)


def _check_group(group: dict[str, Any]) -> dict[str, Any]:
    """Validate one parameter group's hyperparameters (construction, add_param_group, load)."""
    hp = {k: v for k, v in group.items() if k in GROUP_KEYS}
    special = {k: hp.pop(k) for k in ("foreach", "impl", "state_dtype", "sparse_mode") if k in hp}
    checked = validate_hyperparameters(hp, lr_check=check_torch_lr)
    if "foreach" in special and not (
        special["foreach"] is None or isinstance(special["foreach"], bool)
    ):
        raise TypeError(f"foreach must be None, True or False, got {special['foreach']!r}")
    if "impl" in special:
        check_choice("impl", special["impl"], IMPLS)
        if checked.get("differentiable") and special["impl"] not in ("auto", "single"):
            raise ValueError(
                f"differentiable=True needs impl='single' (got impl={special['impl']!r})"
            )
    if "state_dtype" in special and special["state_dtype"] not in STATE_DTYPES:
        raise ValueError(
            f"state_dtype={special['state_dtype']!r} is not supported: it must be None "
            "(the parameter's dtype), torch.float32, torch.bfloat16 or 'int8'"
        )
    if "sparse_mode" in special:
        check_choice("sparse_mode", special["sparse_mode"], SPARSE_MODES)
    return {**group, **checked, **special}


class RMSprop(Optimizer):
    __doc__ = (
        r"""RMSprop with every framework's variant; a drop-in for ``torch.optim.RMSprop``.

    With its defaults (and any of torch's own arguments) it runs ``torch.optim.RMSprop``'s
    algorithm with the same operations in the same order: results are equal bit for bit,
    for the for-loop (``foreach=False``) and foreach paths, and ``state_dict`` uses torch's
    keys (``step``, ``square_avg``, ``momentum_buffer``, ``grad_avg``), so checkpoints move
    both ways. The keyword-only switches reproduce Keras, TF1, optax and timm exactly; the
    easiest way to set them is :meth:`from_preset`.

    The algorithm (step numbers appear as comments in every implementation)::

"""
        + "\n".join("        " + line for line in ALGORITHM.splitlines())
        + r"""

    Args:
      params: parameters or parameter groups (dicts may set any argument below per group).
      lr: learning rate (default 1e-2): a float or a 1-element tensor.
      alpha: decay of the moving averages, in [0, 1) (default 0.99).
      eps: added to the denominator (default 1e-8).
      weight_decay: λ (default 0): coupled L2 unless ``decoupled_weight_decay``.
      momentum: heavy-ball momentum in [0, 1) (default 0).
      centered: divide by the root of the variance ``v - ḡ²`` (default False).
      capturable, foreach, maximize, differentiable: as in ``torch.optim.RMSprop``.
      eps_in_sqrt: ``sqrt(v + eps)`` (Keras, TF1, optax, timm) instead of ``sqrt(v) + eps``.
      initial_accumulator_value: start of ``square_avg`` (TF1, timm ``RMSpropTF``: 1).
      nesterov: Nesterov momentum (optax); needs ``momentum > 0``.
      lr_in_momentum: the lr multiplies the gradient before the buffer (TF1, Keras, optax,
        timm); by default the buffer is multiplied by the lr (torch).
      decoupled_weight_decay: ``θ ← θ(1 − lr·λ)`` before the step (Keras 3, timm
        ``decoupled_decay``) instead of ``g ← g + λθ``.
      bias_correction: divide the averages by ``1 − alphaᵗ`` (optax).
      clipvalue, clipnorm, global_clipnorm: Keras's gradient clipping (at most one; the
        global norm is over the parameter group). ``p.grad`` itself is not modified.
      impl: ``"auto"``, ``"single"``, ``"foreach"``, ``"numba"``, ``"triton"`` or
        ``"compiled"``. An explicit choice that cannot run raises and says why.
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

    Example:
      >>> import torch, rmsprop
      >>> model = torch.nn.Linear(3, 1)
      >>> opt = rmsprop.RMSprop(model.parameters(), lr=0.01)            # torch.optim.RMSprop
      >>> opt = rmsprop.RMSprop.from_preset(model.parameters(), "tf1", lr=0.01, momentum=0.9)
      >>> model(torch.ones(2, 3)).sum().backward(); opt.step(); opt.zero_grad()
    """
    )

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
        defaults = _check_group(
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
        self.nonfinite = check_choice("nonfinite", nonfinite, ("update", "skip", "raise"))
        self.skipped_steps = 0
        self.rounding_seed = 0  # the stochastic-rounding stream of bf16 state (saved in state_dict)
        self.last_impl: dict[int, str] = {}
        super().__init__(params, defaults)

    @classmethod
    def from_preset(cls, params: Iterable[Any], name: str, **overrides: Any) -> RMSprop:
        """The optimizer with preset ``name``'s switches (``rmsprop.PRESETS``); overrides win.

        >>> import torch, rmsprop
        >>> opt = rmsprop.RMSprop.from_preset([torch.zeros(3, requires_grad=True)], "keras", lr=0.1)
        """
        return cls(params, **get_preset(name).hyperparameters(**overrides))

    # ------------------------------------------------------------------ groups and state
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's, with the group's hyperparameters validated first."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self.param_groups[-1] = _check_group(group)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("nonfinite", "update")
        self.__dict__.setdefault("skipped_steps", 0)
        self.__dict__.setdefault("last_impl", {})
        self.__dict__.setdefault("rounding_seed", 0)
        for group in self.param_groups:
            for key in GROUP_KEYS:
                group.setdefault(key, self.defaults[key])
            for p in group["params"]:
                st = self.state.get(p, {})
                if st and "step" in st and not torch.is_tensor(st["step"]):
                    st["step"] = torch.tensor(float(st["step"]), dtype=_get_scalar_dtype())

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["skipped_steps"] = self.skipped_steps
        sd["rounding_seed"] = self.rounding_seed
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
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self.rounding_seed = int(state_dict.get("rounding_seed", 0))
        for group, kept in zip(self.param_groups, runtime):  # how to run is not in a checkpoint
            group.update(kept)
        for group in self.param_groups:
            for p in group["params"]:
                if p in saved:
                    self._adopt_saved(p, group, saved[p])

    def _adopt_saved(self, p: Tensor, group: dict[str, Any], entry: dict[str, Any]) -> None:
        """Keep the saved buffers' own dtypes (torch casts them to the parameter's), then
        convert each buffer to this group's ``state_dtype`` form if it is in another."""
        state = self.state[p]
        for key, value in entry.items():
            if key != "step" and torch.is_tensor(value):
                state[key] = value.to(device=p.device)
        step = int(state["step"]) if "step" in state else 0
        converted = {name: decode(state, name) for name in BUFFERS
                     if has(state, name) and not in_form(state, name, p, group["state_dtype"])}  # fmt: skip
        if converted:
            encode(
                state, converted, p, group["state_dtype"], step, self.rounding_seed, self._salt(p)
            )

    def _init_states(self, params: list[Tensor], group: dict[str, Any]) -> list[dict[str, Any]]:
        """``_init_state`` of each of ``params`` (a group's), with one quick test per
        parameter whose state is complete (the usual case: every step after the first)."""
        kept = buffers_in_use(group["centered"], group["momentum"])
        keys = [(name, f"{name}_codes") for name in kept]
        states = []
        for p in params:
            state = self.state[p]
            if "step" not in state or not all(k in state or c in state for k, c in keys):
                state = self._init_state(p, group)
            states.append(state)
        return states

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """State created on demand: switching momentum or centered on later works."""
        state = self.state[p]
        state_dtype = group["state_dtype"]
        if "step" not in state:
            device = p.device if group["capturable"] else None
            state["step"] = torch.zeros((), dtype=_get_scalar_dtype(), device=device)
        wanted = (
            ("square_avg", True, group["initial_accumulator_value"]),
            ("momentum_buffer", group["momentum"] > 0, 0.0),
            ("grad_avg", group["centered"], 0.0),
        )
        compact: dict[str, Tensor] = {}
        for key, needed, start in wanted:
            if not needed or has(state, key):
                continue
            if state_dtype in COMPACT:  # a DTensor's state: built from its local shard
                compact[key] = torch.full_like(
                    local(p), start, dtype=torch.float32 if not p.is_complex() else p.dtype
                )
            else:
                dtype = p.dtype if state_dtype is None or torch.is_complex(p) else state_dtype
                state[key] = torch.full_like(
                    p, start, dtype=dtype, memory_format=torch.preserve_format
                )
        if compact:
            encode(state, compact, p, state_dtype, 0, self.rounding_seed, self._salt(p))
        return state

    def _salt(self, p: Tensor) -> int:
        """A per-parameter number for the stochastic-rounding stream (its position)."""
        salt = getattr(self, "_salts", {}).get(p)
        if salt is None:
            self._salts = {
                q: i for i, q in enumerate(q for g in self.param_groups for q in g["params"])
            }
            salt = self._salts[p]
        return salt

    # ------------------------------------------------------------------ the step
    def _grads(self) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """(2) per group: params with a gradient, and their gradients after clipping."""
        out = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = clip_gradients([p.grad for p in params], group)
            out.append((group, params, grads))
        return out

    def _all_finite(self, work: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]) -> bool:
        """Every gradient finite, on every rank (so that ranks skip together)."""
        return not any_nonfinite([g for _, _, grads in work for g in grads])

    @_use_grad_for_differentiable
    def step(self, closure=None):  # type: ignore[override]
        """One optimization step. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._grads()
        if self.nonfinite != "update" and not self._all_finite(work):
            if self.nonfinite == "raise":
                raise FloatingPointError(
                    "a gradient contains NaN or Inf; nothing was updated (nonfinite='raise')"
                )
            self.skipped_steps += 1
            return loss
        for index, (group, params, grads) in enumerate(work):
            self.last_impl[index] = self._step_group(group, params, grads)
        return loss

    def _step_per_tensor(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> str:
        """Compact state or stochastically rounded bf16 params: per tensor, decode the state
        (and widen a bf16 param) to fp32, run the implementation, encode back (stochastic
        rounding for bf16, blockwise codes for int8). One tensor's fp32 copy at a time."""
        if any(is_sparse(g) for g in grads):  # refused before any parameter is updated
            raise RuntimeError(
                "sparse gradients with state_dtype=bfloat16/'int8' or stochastic_rounding are not supported"
            )
        hp = Hyper.from_group(group)
        used = "none"
        for p, g, state in zip(params, grads, self._init_states(params, group)):
            param, grad = local(p), local(g)
            work = {k: decode(state, k) for k in BUFFERS if has(state, k)}
            if param.dtype == torch.float64:  # fp64 params: fp64 math, as the fused kernel
                work = {k: v.double() for k, v in work.items()}
            rounded = group["stochastic_rounding"] and param.dtype == torch.bfloat16
            param_work = param.float() if rounded else param
            tensors = (param_work, grad.float() if rounded else grad, work["square_avg"],
                       work.get("grad_avg") if hp.centered else None,
                       work.get("momentum_buffer") if hp.momentum > 0 else None, state["step"])  # fmt: skip
            used = functional_rmsprop(
                *([local(t)] for t in tensors), lr=group["lr"], hp=hp, impl=group["impl"],
                foreach=group["foreach"], capturable=group["capturable"],
            )  # fmt: skip
            step, salt = int(state["step"]), self._salt(p)
            if rounded:  # (10) θ stored with stochastic rounding: small updates survive on average
                param_seed = stream_seed(self.rounding_seed, salt, "param")
                param.copy_(
                    stochastic_round_to_bf16(param_work, step, param_seed, first_element(p))
                )
            encode(state, work, p, group["state_dtype"], step, self.rounding_seed, salt)
        return used

    def _fused_impl(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> str:
        """The implementation for compact state or stochastically rounded params: "numba"
        or "triton" when their fused kernel can run the whole group, else "per-tensor"."""
        if not params or any(is_sparse(g) or p.is_complex() for p, g in zip(params, grads)):
            return "per-tensor"
        if any_dtensor(params):  # DTensors: the kernels update the local shards
            params = [local(p) for p in params]
        from .functional import select_impl

        state_dtype, dtypes = group["state_dtype"], {p.dtype for p in params}
        rounded = group["stochastic_rounding"] and torch.bfloat16 in dtypes
        impl = select_impl(group["impl"], group["foreach"], params, group["differentiable"],
                           rounded)  # fmt: skip
        if len(dtypes) != 1 or (rounded and state_dtype not in (torch.float32, *COMPACT)):
            return "per-tensor"  # mixed dtypes, or state kept as bf16 params (nearest)
        if impl == "triton" or (
            impl == "numba"
            and dtypes.pop() in backend("numba").compact_dtypes(state_dtype, rounded)
        ):
            return impl
        return "per-tensor"

    def _step_fused(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
                    impl: str) -> None:  # fmt: skip
        """Compact state (and stochastically rounded bf16 params) in one fused pass per
        state form: decode, update, encode in registers. Under int8, tensors below the
        size threshold keep fp32 state and run in a second launch."""
        hp = Hyper.from_group(group)
        states = self._init_states(params, group)
        state_dtype = group["state_dtype"]
        rounded = group["stochastic_rounding"] and params[0].dtype == torch.bfloat16
        forms: dict[Any, list[int]] = {}
        for i, st in enumerate(states):
            form = (
                state_dtype if state_dtype != "int8" or "square_avg_codes" in st else torch.float32
            )
            forms.setdefault(form, []).append(i)
        sharded = any_dtensor(params)
        for form, index in forms.items():
            ps, gs = [params[i] for i in index], [grads[i] for i in index]
            sts, salts = [states[i] for i in index], [self._salt(p) for p in ps]
            firsts = [first_element(p) for p in ps] if sharded else [0] * len(ps)
            if sharded:  # DTensors: their local shards and state
                ps, gs = [local(p) for p in ps], [local(g) for g in gs]
                sts = [{k: local(v) for k, v in st.items()} for st in sts]
            backend(impl).step_compact(ps, gs, sts, lr=group["lr"], hp=hp, state_dtype=form,
                                       round_param=rounded, seed=self.rounding_seed, salts=salts,
                                       firsts=firsts)  # fmt: skip

    def _step_group(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> str:
        if group["state_dtype"] in COMPACT or (
            group["stochastic_rounding"] and any(p.dtype == torch.bfloat16 for p in params)
        ):
            impl = self._fused_impl(group, params, grads)
            if impl == "per-tensor":
                return self._step_per_tensor(group, params, grads)
            self._step_fused(group, params, grads, impl)
            return impl
        hp = Hyper.from_group(group)
        dense: tuple[list[Any], ...] = ([], [], [], [], [], [])
        used = "none"
        for p, g, state in zip(params, grads, self._init_states(params, group)):
            tensors = (p, g, state["square_avg"], state.get("grad_avg") if hp.centered else None,
                       state.get("momentum_buffer") if hp.momentum > 0 else None, state["step"])  # fmt: skip
            if is_dtensor(p):  # FSDP2: update this rank's shard in place (to_local shares storage)
                tensors = tuple(local(t) for t in tensors)
            if is_sparse(g):
                if group["sparse_mode"] == "dense":
                    tensors = (p, densify(g), *tensors[2:])
                else:
                    lazy_sparse_rmsprop_(*tensors, lr=group["lr"], hp=hp)
                    used = "sparse-lazy"
                    continue
            for bucket, tensor in zip(dense, tensors):
                bucket.append(tensor)
        if dense[0]:
            used = functional_rmsprop(
                *dense, lr=group["lr"], hp=hp, impl=group["impl"], foreach=group["foreach"],
                capturable=group["capturable"],
            )  # fmt: skip
        return used


# ---------------------------------------------------------------------- clipping (2)
def clip_gradients(grads: list[Tensor], group: dict[str, Any]) -> list[Tensor]:
    """Keras's clipping, on copies (``p.grad`` is left as it is). Norms are summed in
    float64, over every rank's shard when the gradients are DTensors (one all-reduce)."""
    if group["clipvalue"] is not None:
        c = group["clipvalue"]
        return [_map_values(g, lambda v, c=c: _clamp(v, c)) for g in grads]
    if group["clipnorm"] is not None:
        c = group["clipnorm"]
        scales = [clip_scale(sq, c) for sq in squared_norms(grads)]
        return [_map_values(g, lambda v, s=s: v * s) for g, s in zip(grads, scales)]
    if group["global_clipnorm"] is not None and grads:
        scale = clip_scale(sum(squared_norms(grads)), group["global_clipnorm"])
        return [_map_values(g, lambda v: v * scale) for g in grads]
    return grads


def _map_values(g: Tensor, fn) -> Tensor:
    if not g.is_sparse:
        return fn(g)
    g = g.coalesce()
    return torch.sparse_coo_tensor(g.indices(), fn(g.values()), g.shape).coalesce()


def _clamp(v: Tensor, c: float) -> Tensor:
    if torch.is_complex(v):
        return torch.view_as_complex(torch.view_as_real(v).clamp(-c, c).contiguous())
    return v.clamp(-c, c)
