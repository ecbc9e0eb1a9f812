"""Diffusion sampling (a Diffusers UNet and scheduler) spread over the ranks of ``torch.distributed``.

Every rank calls ``parallel_sample`` with the same arguments and a
:class:`~pitsolve.distributed.DistributedExecutor`; each sweep's window of
UNet calls is split over the ranks and every rank gets the same samples, which
rank 0 compares with the sequential sampler (same noise)::

    torchrun --nproc_per_node=2 examples/distributed_diffusion.py                  # CPU, gloo, tiny UNet
    torchrun --nproc_per_node=4 examples/distributed_diffusion.py --backend nccl \\
             --model google/ddpm-cifar10-32 --steps 1000 --window 64            # 4 GPUs, a trained DDPM

Without ``--model`` the UNet is a tiny randomly initialised one built from a
config (no download), seeded alike on every rank.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

import pitsolve.distributed
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)  # the same weights on every rank
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4,
    ).eval()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="nccl" if torch.cuda.is_available() else "gloo")
    parser.add_argument("--model", default=None, help="a Diffusers UNet2DModel (hub id or folder); default: tiny")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="ddpm")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds an exchange may wait for the others")
    args = parser.parse_args(argv)

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        if args.model is None:
            unet, scheduler = tiny_unet(), SCHEDULERS[args.scheduler](num_train_timesteps=1000)
        else:
            unet = UNet2DModel.from_pretrained(args.model).eval()
            scheduler = SCHEDULERS[args.scheduler].from_pretrained(args.model)
        unet = unet.to(device)
        size = unet.config.sample_size
        shape = (args.batch, unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
        kw = dict(num_inference_steps=args.steps, shape=shape, window=args.window, tol=args.tol)

        executor = pitsolve.distributed.DistributedExecutor(timeout=args.timeout)
        samples, solution = parallel_sample(unet, scheduler, generator=torch.Generator().manual_seed(args.seed),
                                            executor=executor, **kw)
        result = {"rank": rank, "world_size": world, "status": solution.status.name,
                  "iterations": solution.iterations, "model_seconds": executor.stats.compute_time,
                  "communication_seconds": executor.stats.communication_time}
        if rank == 0:
            reference, _ = sequential_sample(unet, scheduler, generator=torch.Generator().manual_seed(args.seed), **kw)
            error = float((samples - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())
            result["relative_error_vs_sequential"] = error
            print(f"{world} ranks ({args.backend}): {solution}")
            print(f"  relative RMS error vs the sequential sampler (same noise): {error:.2e}")
            print(f"  rank 0: {executor.stats.calls} exchanges, {executor.stats.compute_time:.3f} s in UNet calls, "
                  f"{executor.stats.communication_time:.3f} s exchanging")
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
