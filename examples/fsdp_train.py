"""Train a small MLP with FSDP2 and rmsprop.RMSprop, on CPU with gloo or on GPUs with NCCL.

    torchrun --nproc-per-node 2 examples/fsdp_train.py            # CPU, 2 ranks
    torchrun --nproc-per-node 2 examples/fsdp_train.py --resume   # continue from the checkpoint

Each rank updates only its shard of every parameter (with the fused kernel for its
device); gradient clipping by global norm and the non-finite check take one all-reduce.
The optimizer state is saved and restored with torch.distributed.checkpoint.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

import rmsprop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--checkpoint", default="fsdp-checkpoint")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    )
    if cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, 10),
    ).to(device)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)

    # TF1's RMSprop (EfficientNet/MobileNet recipes), with Keras-style global clipping
    opt = rmsprop.RMSprop.from_preset(
        model.parameters(), "tf1", lr=1e-2, momentum=0.9, global_clipnorm=1.0, nonfinite="skip"
    )
    if args.resume:
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, opt),
        }
        dcp.load(state, checkpoint_id=args.checkpoint)
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, opt, state["optim"])

    generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
    target = torch.nn.Linear(64, 10)
    for step in range(args.steps):
        x = torch.randn(32, 64, generator=generator)
        y = target(x).detach().argmax(1)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
        opt.step()
        if step % 10 == 0 and rank == 0:
            print(f"step {step:3d}  loss {loss.item():.4f}  impl {opt.last_impl.get(0)}")

    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.save(state, checkpoint_id=args.checkpoint)
    if rank == 0:
        print(f"saved {args.checkpoint}; skipped steps: {opt.skipped_steps}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
