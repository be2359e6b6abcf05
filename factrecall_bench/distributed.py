"""Several processes per run (`accelerate launch`, `torchrun`): who does what.

Under data parallelism (DDP) every process trains the same run on its share of each step's
examples, and all of them evaluate and trace it, each its share of the questions. The main process
alone takes the run's lock, decides whether to skip or resume, and writes events, checkpoints and
result.json while the others wait. With one process (the default) every helper here is a no-op,
so the single-process path is the same code. Under FSDP2 (`is_sharded`) every process holds a
shard of every parameter: checkpoints are gathered and the trace is shard-local (see
checkpoints.py and trace/).

The process group is accelerate's (`PartialState`), the collectives torch's or accelerate's: no
home-made launcher or communication.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


def world_size() -> int:
    """Processes launched for this job (the launcher's WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


WAIT_FOR_MAIN = timedelta(hours=12)
"""How long the other processes wait while the main one evaluates and traces a run (the process
group's timeout; torch's default of 10 minutes is shorter than a paper-scale evaluation)."""


@functools.cache
def _state() -> Any:
    """accelerate's process state; on a machine without CUDA the processes use gloo on CPU."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=WAIT_FOR_MAIN)
    # A process that exits with its process group alive can abort in the group's teardown
    # ("terminate called without an active exception"): close it on the way out.
    atexit.register(state.destroy_process_group)
    return state


def start() -> None:
    """Set up the process group (gloo on a machine without CUDA) before accelerate's Accelerator
    would pick its own defaults; a no-op with one process."""
    if is_distributed():
        _state()


def _has_process_group() -> bool:
    """Whether this process has set up its process group (`_state` ran)."""
    return _state.cache_info().currsize > 0


def leave(code: int, command_completed: bool) -> NoReturn:
    """End this process of a launched job with exit code `code`.

    A process that left on its own while another still worked (the second one, say, while the
    main one wrote the report) was seen to abort in its teardown ("terminate called without an
    active exception", SIGABRT), which the launcher reports as the whole job failing. So the
    processes whose command completed wait for each other, close the process group together and
    exit without the interpreter's teardown (everything is on disk by then). One whose command
    was cut short (bad input, a bug, Ctrl-C) does not wait: its peers may be inside a collective
    it will never join, and its leaving is what ends theirs.
    """
    if _has_process_group():
        with contextlib.suppress(Exception):  # a peer that left already cannot be waited for
            if command_completed:
                barrier()
            _state().destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def rank() -> int:
    return _state().process_index if is_distributed() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        _state().wait_for_everyone()


def computed_on_main(compute: Callable[[], T]) -> T:
    """`compute()` run by the main process only; its (picklable) value, on every process."""
    if not is_distributed():
        return compute()
    from accelerate.utils import broadcast_object_list

    box: list[Any] = [compute() if is_main() else None]
    broadcast_object_list(box, from_process=0)
    return box[0]


def tensors_from_main(tensors: T) -> T:
    """The main process's tensors (a nested dict of them), on every process."""
    if not is_distributed():
        return tensors
    from accelerate.utils import broadcast

    return broadcast(tensors, from_process=0)


def is_sharded(model: Any) -> bool:
    """Whether FSDP2 shards the model's parameters across the processes (its forwards gather them,
    so every process must run as many)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reshard(model: Any) -> None:
    """Put every FSDP2 module of the model back to sharded parameters; a no-op otherwise.

    After a forward without backward (evaluation) FSDP2 leaves the root's parameters gathered,
    and `model.parameters()` then yields those whole tensors instead of the shards: an optimizer,
    a checkpoint or the trace must not start from there.
    """
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def shard(items: list[T]) -> list[T]:
    """This process's share of `items`: every world_size-th one, from its rank."""
    return items[rank()::world_size()] if is_distributed() else items


def gather_shards(local: list[T]) -> list[T]:
    """Every process's `shard` results, back in the order of the unsharded list (on all)."""
    if not is_distributed():
        return local
    from accelerate.utils import gather_object

    parts = gather_object([local])  # one list per process, in rank order
    merged: list[Any] = [None] * sum(len(part) for part in parts)
    for process, part in enumerate(parts):
        merged[process::len(parts)] = part
    return merged


@contextlib.contextmanager
def main_process_lock(path: Path) -> Iterator[bool]:
    """Yields on every process whether the main process got the run's lock (without waiting).

    The lock is flock(2) on `path` unless FACTRECALL_LOCK=owner-file: see locks.py for the
    filesystems each is safe on (flock across nodes needs a filesystem that makes it cluster-wide:
    NFSv4 or NFSv3 with lockd, Lustre with `-o flock`, GPFS; not NFS with `nolock`).
    """
    from factrecall_bench.locks import run_lock

    lock = run_lock(path) if is_main() else None
    acquired = computed_on_main(lambda: lock is not None and lock.acquire())
    try:
        yield acquired
    finally:
        if acquired and lock is not None:
            lock.release()
