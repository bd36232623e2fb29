"""Checkpoints that never lose a run: atomic saves, loads that say what is wrong."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

import rmsprop
from rmsprop.optim import checkpoint


def _optimizer(steps: int = 2, **kwargs) -> tuple[torch.Tensor, rmsprop.RMSprop]:
    p = torch.linspace(-1, 1, 5000).requires_grad_()
    opt = rmsprop.RMSprop([p], lr=0.01, momentum=0.9, **kwargs)
    for k in range(steps):
        p.grad = torch.cos(torch.arange(5000.0) * (k + 1))
        opt.step()
    return p, opt


def test_a_save_killed_part_way_leaves_the_previous_checkpoint(tmp_path):
    """A save that cannot finish (here: the file-size limit of the process is hit while
    writing, as on a full disk) raises, and the previous checkpoint is intact, loadable,
    and no temporary file is left behind."""
    path = tmp_path / "opt.pt"
    p, opt = _optimizer(state_dtype="int8")
    checkpoint.save(opt, path)
    good = path.read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal, torch, rmsprop
        from rmsprop.optim import checkpoint
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit raises instead
        p = torch.zeros(3_000_000, requires_grad=True)
        opt = rmsprop.RMSprop([p], momentum=0.9, centered=True)
        p.grad = torch.ones(3_000_000); opt.step()
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))
        try:
            checkpoint.save(opt, {str(path)!r})
        except Exception as err:  # torch.save wraps the OSError (EFBIG) in a RuntimeError
            print("FAILED", type(err).__name__)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "FAILED" in run.stdout, run.stdout + run.stderr[-2000:]
    assert path.read_bytes() == good
    assert [f.name for f in tmp_path.iterdir()] == ["opt.pt"]
    q, fresh = _optimizer(steps=0, state_dtype="int8")
    checkpoint.load(fresh, path)
    assert torch.equal(
        fresh.state[q]["momentum_buffer_codes"], opt.state[p]["momentum_buffer_codes"]
    )


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", r"is empty \(0 bytes\): was a save interrupted\?"),
        ("truncated", r"cannot be read: it is truncated or was not written by torch.save"),
        (b"epoch,loss\n1,0.5\n", r"cannot be read: it is truncated or was not written"),
        ("tensor", r"holds a Tensor, not an optimizer state_dict"),
    ],
    ids=["empty", "truncated", "text", "a tensor"],
)
def test_load_says_which_file_and_what_is_wrong(tmp_path, content, pattern):
    path = tmp_path / "opt.pt"
    if content == "truncated":
        _, opt = _optimizer()
        checkpoint.save(opt, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path.write_bytes(content)
    p, opt = _optimizer()
    before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    with pytest.raises(ValueError, match=f"checkpoint {path}.*{pattern}|{pattern}") as info:
        checkpoint.load(opt, path)
    assert str(path) in str(info.value)
    assert torch.equal(p.detach(), before[0])
    assert all(torch.equal(opt.state[p][k], v) for k, v in before[1].items())


def test_load_of_a_missing_file_names_it(tmp_path):
    _, opt = _optimizer(steps=0)
    with pytest.raises(FileNotFoundError, match=r"opt\.pt does not exist"):
        checkpoint.load(opt, tmp_path / "opt.pt")


def test_load_of_another_optimizers_checkpoint_names_the_file(tmp_path):
    p = torch.zeros(5000, requires_grad=True)
    path = tmp_path / "adam.pt"
    torch.save(torch.optim.Adam([p], lr=0.5).state_dict(), path)
    _, opt = _optimizer()
    with pytest.raises(ValueError, match=r"checkpoint .*adam.pt: .*betas"):
        checkpoint.load(opt, path)


# ---------------------------------------------------------------------- load_state_dict
def _snapshot(opt):
    return copy.deepcopy(opt.state_dict()), [copy.deepcopy(g) for g in opt.param_groups]


def _bad_entries():
    """(what is wrong, how to damage a good state_dict, the message expected)."""

    def drop(key):
        def damage(sd):
            del sd["state"][0][key]

        return damage

    def set_step(value):
        def damage(sd):
            sd["state"][0]["step"] = value

        return damage

    def set_counter(key, value):
        def damage(sd):
            sd[key] = value

        return damage

    return [
        ("no square_avg after a step", drop("square_avg"), r"a step was taken \(step=2\) but"),
        ("step 'abc'", set_step("abc"), r"'step' must be a number or a one-element tensor"),
        ("step None", set_step(None), r"'step' must be a number"),
        ("step 2.5", set_step(2.5), r"'step' must be a whole number >= 0"),
        ("step -1", set_step(torch.tensor(-1.0)), r"'step' must be a whole number >= 0"),
        ("skipped_steps None", set_counter("skipped_steps", None), r"'skipped_steps' must be an"),
        ("rounding_seed 'x'", set_counter("rounding_seed", "x"), r"'rounding_seed' must be an"),
    ]


@pytest.mark.parametrize(("damage", "pattern"), [b[1:] for b in _bad_entries()],
                         ids=[b[0] for b in _bad_entries()])  # fmt: skip
def test_a_bad_state_dict_is_refused_and_changes_nothing(damage, pattern):
    _, opt = _optimizer()
    good = copy.deepcopy(opt.state_dict())
    good["param_groups"][0]["lr"] = 0.5  # loading it would change lr
    damage(good)
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=pattern):
        opt.load_state_dict(good)
    after = _snapshot(opt)
    assert after[1][0]["lr"] == before[1][0]["lr"] == 0.01
    for key, value in before[0]["state"][0].items():
        assert torch.equal(after[0]["state"][0][key], value), key
    assert (after[0]["skipped_steps"], after[0]["rounding_seed"]) == (0, 0)


def test_another_optimizers_state_dict_is_refused_naming_what_is_foreign():
    """torch.optim.Adam's state_dict before its first step has no state, only groups: they
    are not RMSprop's (no alpha, centered; betas, amsgrad) and change nothing."""
    q = torch.zeros(5000, requires_grad=True)
    _, opt = _optimizer()
    with pytest.raises(
        ValueError,
        match=r"not RMSprop's: it lacks \['alpha', 'momentum', 'centered'\] and has \['amsgrad', 'betas'",
    ):
        opt.load_state_dict(torch.optim.Adam([q], lr=0.5).state_dict())
    assert opt.param_groups[0]["lr"] == 0.01 and "betas" not in opt.param_groups[0]


def test_an_integer_step_tensor_loads_as_a_float_counter_and_steps():
    _, opt = _optimizer(steps=2)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["step"] = torch.tensor(2, dtype=torch.int64)
    q, fresh = _optimizer(steps=0)
    fresh.load_state_dict(saved)
    assert fresh.state[q]["step"].dtype == torch.float32
    for impl in ("foreach", "numba"):
        fresh.param_groups[0]["impl"] = impl
        q.grad = torch.ones_like(q)
        fresh.step()
    assert float(fresh.state[q]["step"]) == 4


# ---------------------------------------------------------------------- torch format
@pytest.mark.parametrize(
    "state_dtype", [None, torch.bfloat16, "int8"], ids=["fp32", "bf16", "int8"]
)
@pytest.mark.parametrize("centered", [False, True])
def test_torch_format_continues_under_torch_optim(state_dtype, centered):
    """``state_dict(format="torch")`` of a run with any state loads into
    ``torch.optim.RMSprop`` and continues on the trajectory of fp32 state started from the
    same decoded values (this library's single-tensor path, torch's operations)."""
    p, opt = _optimizer(steps=3, state_dtype=state_dtype, centered=centered)
    exported = opt.state_dict(format="torch")
    assert set(exported["state"][0]) <= {"step", "square_avg", "grad_avg", "momentum_buffer"}
    theirs_p = p.detach().clone().requires_grad_()
    theirs = torch.optim.RMSprop([theirs_p], lr=0.01, momentum=0.9, centered=centered,
                                 foreach=False)  # fmt: skip
    theirs.load_state_dict(copy.deepcopy(exported))
    ours_p = p.detach().clone().requires_grad_()
    ours = rmsprop.RMSprop([ours_p], lr=0.01, momentum=0.9, centered=centered, foreach=False)
    ours.load_state_dict(copy.deepcopy(exported))
    for k in range(4):
        g = torch.sin(torch.arange(5000.0) * (k + 2))
        theirs_p.grad, ours_p.grad = g.clone(), g.clone()
        theirs.step()
        ours.step()
    assert torch.equal(theirs_p, ours_p)
    for key, value in theirs.state[theirs_p].items():
        assert torch.equal(value, ours.state[ours_p][key]), key


def test_torch_format_refuses_switches_torch_does_not_have():
    _, opt = _optimizer(steps=1, eps_in_sqrt=True)
    with pytest.raises(
        ValueError, match=r"switches torch.optim.RMSprop does not have: \{'eps_in_sqrt'"
    ):
        opt.state_dict(format="torch")


@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"])
def test_the_counters_survive_a_checkpoint_that_keeps_only_state_and_groups(state_dtype):
    """``torch.distributed.checkpoint``'s ``get_optimizer_state_dict`` keeps only ``state``
    and ``param_groups``: the optimizer's ``rounding_seed`` and ``skipped_steps`` travel in
    each group too, so a compact-state run resumes on its own random stream (it resumed on
    seed 0) and keeps its count of skipped steps; the groups hold no counter afterwards."""

    def run(opt, p, steps, seed=0):
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            p.grad = torch.randn(8192, generator=gen)
            opt.step()

    p = torch.zeros(8192, requires_grad=True)
    opt = rmsprop.RMSprop([p], lr=1e-2, state_dtype=state_dtype, impl="single")
    opt.rounding_seed, opt.skipped_steps = 12345, 3
    run(opt, p, 2)
    kept = {k: copy.deepcopy(v) for k, v in opt.state_dict().items()
            if k in ("state", "param_groups")}  # fmt: skip
    q = p.detach().clone().requires_grad_()
    resumed = rmsprop.RMSprop([q], lr=1e-2, state_dtype=state_dtype, impl="single")
    resumed.load_state_dict(kept)
    assert (resumed.rounding_seed, resumed.skipped_steps) == (12345, 3)
    assert all(key not in resumed.param_groups[0] for key in ("rounding_seed", "skipped_steps"))
    run(opt, p, 3, seed=1)
    run(resumed, q, 3, seed=1)
    assert torch.equal(p, q)


def test_a_counter_in_a_group_is_checked():
    opt = rmsprop.RMSprop([torch.zeros(3, requires_grad=True)], lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"][0]["skipped_steps"] = -1
    with pytest.raises(ValueError, match=r"group 0: 'skipped_steps' must be >= 0"):
        opt.load_state_dict(sd)
