"""Shards (FSDP2) and sums: under FSDP2 the parameters, their gradients and so the scores and masks
are DTensors sharded by rows; every process works on its own rows, and what needs the whole model is
a sum over the processes (one all-reduce of a few numbers). Ordinary tensors take the same code with
no communication.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor, Shard


def local_part(tensor: Tensor) -> Tensor:
    """This process's rows of a sharded (DTensor) tensor; an ordinary tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def global_rows(tensor: Tensor) -> slice:
    """The rows of the whole tensor that local_part(tensor) holds. FSDP2 shards dim 0 as
    torch.chunk does: ceil(rows / processes) rows each, the last ones shorter or empty."""
    rows = tensor.shape[0]
    if not isinstance(tensor, DTensor):
        return slice(0, rows)
    if tuple(tensor.placements) != (Shard(0),):
        raise ValueError(f"trace: expected parameters sharded by rows, got {tensor.placements}")
    mesh = tensor.device_mesh
    chunk = -(-rows // mesh.size())
    start = min(mesh.get_local_rank() * chunk, rows)
    stop = min(start + chunk, rows)
    if tensor.to_local().shape[0] != stop - start:
        raise ValueError(f"trace: unexpected shard of {stop - start} rows: "
                         f"{tensor.to_local().shape[0]}")
    return slice(start, stop)


def summed(values: Tensor, like: Tensor) -> Tensor:
    """values summed over the processes that shard `like` (values themselves when not sharded)."""
    if isinstance(like, DTensor):
        values = values.to(local_part(like).device)
        dist.all_reduce(values, group=like.device_mesh.get_group())
    return values


def _any_sharded(tensors: Mapping[str, Tensor]) -> DTensor | None:
    return next((t for t in tensors.values() if isinstance(t, DTensor)), None)


def _total(counts: Sequence[float], tensors: Mapping[str, Tensor]) -> list[float]:
    """Per-process counts over tensors (all sharded alike, or none) summed over the processes."""
    values = torch.tensor(list(counts), dtype=torch.float64)
    like = _any_sharded(tensors)
    return summed(values, like).cpu().tolist() if like is not None else values.tolist()


def _like(local: Tensor, reference: Tensor) -> Tensor:
    """local wrapped as a DTensor with reference's layout (itself when reference is not one)."""
    if not isinstance(reference, DTensor):
        return local
    return DTensor.from_local(local, reference.device_mesh, reference.placements,
                              shape=reference.shape, stride=reference.stride())


def _rows_of_whole(whole: Tensor, like: Tensor) -> Tensor:
    """The rows of a whole (unsharded) tensor that this process holds of `like`."""
    return whole[global_rows(like)] if isinstance(like, DTensor) else whole

def row_counts(mask: Tensor) -> Tensor:
    """Masked elements per row of the whole tensor (int64, on CPU), from this process's rows."""
    local = local_part(mask).detach()
    counts = torch.zeros(mask.shape[0], dtype=torch.int64, device=local.device)
    counts[global_rows(mask)] = local.reshape(local.shape[0], -1).sum(1)
    return summed(counts, mask).cpu()


def column_counts(mask: Tensor) -> Tensor:
    """Masked elements per column of a whole 2-D tensor (int64, on CPU)."""
    return summed(local_part(mask).detach().sum(0, dtype=torch.int64), mask).cpu()
