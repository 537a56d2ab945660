"""Data parallelism on the standard engine: `torchrun --nproc_per_node N -m hawkeye_lite train ...`.

One process per GPU (or per CPU process with gloo, as the tests run it). What is shared:
- the data: each rank rolls out and learns a disjoint, contiguous share of every step's images
  (a pure function of the global step, so a resume needs no sampler state);
- the gradients: after the last micro-batch of a step the LoRA gradients are summed across
  ranks in one flat all-reduce (see `all_reduce_grads` for why not DistributedDataParallel);
- the normalisers: every loss is divided by counts summed over all ranks and micro-batches,
  so the step's objective is the single-process one for every loss_type.
Nothing else is coupled: group advantages stay within an image's G rollouts.

Single-process runs never touch torch.distributed: `Dist.single()` answers every call locally.
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass
from typing import Any, List, Sequence

import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def single() -> "Dist":
        return Dist()

    @staticmethod
    def from_env(*, timeout_s: float, device: str = "") -> "Dist":
        """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_*);
        a lone process gets `single()`. gloo on CPU, nccl on CUDA. Every collective gives up
        after `timeout_s`, so a rank that died stops the others with an error, not a hang."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return Dist.single()
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        return Dist(rank, world, local, backend)

    # --------------------------------------------------------------- collectives

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum of a few numbers over ranks (float64, so counts stay exact)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self._device())
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([1.0 if flag else 0.0])[0] > 0

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the trainable gradients over ranks, in place, in one flat buffer.

        Why not DistributedDataParallel: the trainer does not call the model's forward — it runs
        the decoder stack on completion positions, a reference pass with the adapter switched off
        and a degraded-image pass without gradient, several forwards per backward (μ and
        grad_accum), under activation checkpointing. DDP's hooks assume one forward of the wrapped
        module per backward (else `no_sync` and find_unused_parameters gymnastics); with LoRA
        the gradients are a few hundred MB at most and the step is dominated by rollouts, so the
        overlap DDP buys is small. One all-reduce per optimizer step is simple and exact."""
        if not self.enabled:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            chunk = flat[offset : offset + n].view_as(g).to(g.dtype)
            if p.grad is None:
                p.grad = chunk
            else:
                p.grad.copy_(chunk)
            offset += n

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's `obj`, in rank order, on every rank (small Python objects only)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self, *, together: bool = False) -> None:
        """Leave the process group. `together` (a run that ended normally): wait for every rank
        first. A rank that tore its connections down while another was still finishing its last
        writes was seen to abort that rank at exit ("terminate called without an active
        exception", gloo, about 1 run in 5 here); after an error, no waiting (the others may be
        gone)."""
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                if together:
                    dist.barrier()
                dist.destroy_process_group()


def share(n: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous share of n items (the first n % world ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def picklable(exc: BaseException) -> BaseException:
    """An exception that can cross ranks (broadcast_object_list pickles it)."""
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
