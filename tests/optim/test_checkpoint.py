"""Checkpoints that never lose a run: atomic saves, loads that say what is wrong."""

from __future__ import annotations

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
