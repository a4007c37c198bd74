"""Data-parallel training over ``torch.distributed``: the world of ranks, sharded batches and
exact reductions of the loss, the gradients and the metrics.

Launch: ``torchrun --nproc_per_node N -m equiforce train run.yaml`` (torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). Without those variables
(plain ``equiforce train``) the world is one rank, ``torch.distributed`` is never initialised
and the trainer runs its single-process code path, unchanged.

Batches. ``data.batch_size`` is the *global* batch B: structures per optimizer step over all
ranks (each of W ranks holds B / W; B must be a multiple of W). Global batch b of epoch e is
slice ``[b B, (b + 1) B)`` of the permutation that ``make_loader`` draws for ``(seed, e)``;
rank r takes the r-th of ``numpy.array_split(that slice, W)`` (contiguous, equal parts; a
short last batch may leave a rank without structures, it then contributes zero). So W ranks
run the same optimizer steps over the same structures as one rank with batch B.

Loss and gradients. The loss of a batch is ``sum_k w_k S_k / N_k``: S_k the sum of term k's
weighted squared errors over the whole global batch, N_k its element count (structures, force
components, stress components). Each rank computes its own S_k^r and n_k^r, the counts are
summed over ranks (``N_k = sum_r n_k^r``), the rank back-propagates ``sum_k w_k S_k^r / N_k``
and the gradients are summed over ranks: the sum is exactly the gradient of the global loss,
whatever the per-rank atom counts (averaging per-rank means, as plain DDP does, is exact only
when every rank holds as many elements). The gradients are reduced explicitly, one flat
``all_reduce`` per parameter dtype and step, rather than through ``DistributedDataParallel``:
forces are derivatives taken inside the forward (a double backward, outside DDP's
bucket hooks), a rank without structures must still join the reduction, and a parameter no
rank touched keeps ``grad = None`` as the single-process optimizer sees it. After the
reduction every rank holds bit-identical gradients, so the optimizer, the EMA and the
schedule stay identical on every rank; ``check_in_sync`` verifies it at every epoch end.

Agreement. Decisions that change the control flow are taken from reduced values, so every
rank takes them together: the time budget (any rank past the deadline), a non-finite loss
(the reduced loss) and the wall time that starts a time-fraction final stage (rank 0's).

Failures. Every collective has the process group's timeout (``equiforce train
--distributed-timeout S``, default 600 s). A rank that dies closes its connections and the
others fail at their next collective at once; a rank that hangs makes them fail after the
timeout. Either way ``RankFailure`` names
the collective and the step, ``equiforce train`` exits with status 1, and ``last.pt`` holds the
last completed epoch (``--resume`` continues it exactly).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import socket
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from equiforce.data.batch import collate
from equiforce.data.dataset import epoch_seed
from equiforce.train.losses import LossParts, WeightedLoss
from equiforce.train.metrics import ErrorAccumulator

LOG = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]

DEFAULT_TIMEOUT_S = 600.0  # a hung rank stops the others after this long


class RankFailure(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or the network failed."""


@dataclass(frozen=True)
class World:
    """The ranks of a run, as this process sees them.

    Attributes:
        rank: this process's rank in ``[0, size)``.
        size: number of ranks (1: no ``torch.distributed``).
        local_rank: rank on this node (picks the GPU).
        device: this rank's device.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA); None for one rank.
        places: per rank, ``"host device"``.
        timeout_s: collective timeout, s.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    places: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def distributed(self) -> bool:
        """More than one rank: batches are sharded and reductions communicate."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0

    def per_rank_batch(self, global_batch: int, key: str = "data.batch_size") -> int:
        """Structures per rank of a global batch.

        Raises:
            ValueError: ``global_batch`` is not a multiple of the world size (names ``key``).
        """
        if global_batch % self.size:
            raise ValueError(
                f"{key} is {global_batch}, the global batch (structures per optimizer step over "
                f"all ranks); it must be a multiple of the world size {self.size}"
            )
        return global_batch // self.size

    def summary(self, batch_size: int, valid_batch_size: int) -> str:
        """One line for the log: ranks, backend, devices, global and per-rank batches."""
        if not self.distributed:
            return (
                f"1 rank (no torch.distributed), device {self.device}; batch {batch_size}, "
                f"validation batch {valid_batch_size}"
            )
        per_rank = self.per_rank_batch(batch_size)
        places = ", ".join(f"rank {r}: {p}" for r, p in enumerate(self.places))
        return (
            f"{self.size} ranks ({self.backend}, timeout {self.timeout_s:g} s; {places}); "
            f"global batch {batch_size} = {self.size} ranks x {per_rank}; validation batch "
            f"{valid_batch_size} split over the ranks"
        )

    def all_reduce_sum(self, values: torch.Tensor, what: str) -> torch.Tensor:
        """``values`` summed over ranks, in place (on one rank: returned as is).

        Raises:
            RankFailure: the collective failed (``what`` says which one).
        """
        if self.distributed:
            with self._collective(what):
                dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast(self, values: torch.Tensor, what: str) -> torch.Tensor:
        """Rank 0's ``values`` on every rank, in place."""
        if self.distributed:
            with self._collective(what):
                dist.broadcast(values, src=0)
        return values

    def barrier(self, what: str) -> None:
        """Wait for every rank."""
        if self.distributed:
            with self._collective(what):
                dist.barrier()

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as err:  # DistBackendError is one; gloo raises plain ones
            raise RankFailure(
                f"rank {self.rank} of {self.size}: {what} failed; another rank has died, hung "
                f"for more than the timeout ({self.timeout_s:g} s, --distributed-timeout) or "
                f"lost the network (look for its error first; the run continues from the last "
                f"checkpoint with --resume). {type(err).__name__}: {err}"
            ) from err


def launched_ranks() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """``RANK`` set by torchrun (0 when absent)."""
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def open_world(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[World]:
    """The world of this process: torchrun's ranks, or one rank.

    With ``WORLD_SIZE`` > 1 the process group is initialised from the environment (``env://``)
    with backend ``nccl`` for CUDA and ``gloo`` for the CPU, and destroyed on exit; an already
    initialised group (a caller that set it up) is used and left alone.

    Args:
        device: the run's device (``training.device`` resolved); under several ranks a CUDA
            device becomes ``cuda:LOCAL_RANK``.
        timeout_s: timeout of every collective, s.

    Raises:
        ValueError: a pinned ``cuda:N`` under several ranks, or torchrun's variables missing.
    """
    if not dist.is_initialized() and launched_ranks() == 1:
        yield World(device=device, timeout_s=timeout_s)
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _rank_device(device, local_rank)
    created = not dist.is_initialized()
    if created:
        _check_environment()
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    world = World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        backend=dist.get_backend(),
        timeout_s=timeout_s,
    )
    try:
        places: list[str | None] = [None] * world.size
        with world._collective("exchanging the ranks' hosts and devices"):
            dist.all_gather_object(places, f"{socket.gethostname()} {device}")
        yield dataclasses.replace(world, places=tuple(places))
    finally:
        if created:
            dist.destroy_process_group()


def _rank_device(device: torch.device, local_rank: int) -> torch.device:
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise ValueError(
            f"training.device is {device}, which pins one GPU; under torchrun set cuda or auto "
            f"(each rank takes cuda:LOCAL_RANK)"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _check_environment() -> None:
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is {launched_ranks()} but {', '.join(missing)} not set: launch with "
            "torchrun --nproc_per_node N -m equiforce train ... (or unset WORLD_SIZE)"
        )


def rank_batches(
    n_items: int, batch_size: int, world: World, shuffle: bool, seed: int = 0, epoch: int = 0
) -> list[list[int]]:
    """This rank's item indices of every global batch of an epoch, in step order.

    Args:
        n_items: dataset length.
        batch_size: global batch (multiple of the world size for training batches).
        world: the ranks.
        shuffle: the ``make_loader`` permutation of ``(seed, epoch)``; False: dataset order.
        seed: run seed.
        epoch: epoch number.

    Returns:
        One (possibly empty) index list per global batch; the same number on every rank.
    """
    if shuffle:  # the order make_loader draws, so one rank equals make_loader's batches
        generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        order = torch.randperm(n_items, generator=generator).numpy()
    else:
        order = np.arange(n_items)
    return [
        np.array_split(order[start : start + batch_size], world.size)[world.rank].tolist()
        for start in range(0, n_items, batch_size)
    ]


def _collate_or_none(graphs: Sequence[Mapping[str, torch.Tensor]]) -> Batch | None:
    return collate(graphs) if len(graphs) else None


def sharded_loader(
    dataset: Dataset, batch_size: int, world: World, shuffle: bool, seed: int = 0, epoch: int = 0
) -> Iterable[Batch | None]:
    """This rank's batches (None for an empty share) of ``rank_batches``."""
    batches = rank_batches(len(dataset), batch_size, world, shuffle, seed, epoch)
    return DataLoader(dataset, batch_sampler=batches, collate_fn=_collate_or_none, num_workers=0)


def global_counts(counts: Sequence[float], world: World, where: str) -> list[float]:
    """Element counts per loss term summed over the ranks (one rank: ``counts`` as given).

    Args:
        counts: this rank's counts (zeros for an empty share).
        world: the ranks.
        where: epoch and step, for errors.
    """
    if not world.distributed:
        return [float(c) for c in counts]
    totals = torch.tensor([float(c) for c in counts], dtype=torch.float64, device=world.device)
    return world.all_reduce_sum(totals, f"{where}: loss element counts").tolist()


def sharded_loss(
    loss_fn: WeightedLoss,
    batch: Batch | None,
    pred: Mapping[str, torch.Tensor] | None,
    world: World,
    where: str,
) -> torch.Tensor:
    """This rank's share of the global batch's loss: ``sum_k w_k S_k^r / N_k``.

    Summed over ranks it is ``loss_fn`` of the whole global batch, and so are its gradients.
    The terms' sums and element counts are those of ``WeightedLoss.term_sums``; the trainer
    composes the same two steps (``term_sums``, ``global_counts``) itself to reuse the sums.

    Args:
        loss_fn: the loss.
        batch, pred: this rank's batch and predictions; None for an empty share.
        world: the ranks (the element counts are summed over them).
        where: epoch and step, for errors.

    Returns:
        Scalar float64 (differentiable; a constant zero for an empty share).
    """
    if batch is None:
        global_counts([0.0] * len(loss_fn.terms), world, where)
        return torch.zeros((), dtype=torch.float64, device=world.device)
    sums, counts = loss_fn.term_sums(batch, pred)
    return loss_fn.from_sums(sums, global_counts(counts, world, where))


def reduce_gradients(
    parameters: Sequence[torch.nn.Parameter], world: World, extras: Sequence[float], where: str
) -> list[float]:
    """Sum the gradients over ranks in place, with a few numbers riding along.

    A parameter whose gradient is None on every rank keeps None; one that has a gradient on
    some rank gets the sum (zeros counted for the others); frozen ones (``requires_grad``
    False) are left out.

    Args:
        parameters: the trained parameters (same order on every rank).
        world: the ranks.
        extras: numbers to sum over ranks in the same message (loss share, flags).
        where: epoch and step, for errors.

    Returns:
        ``extras`` summed over ranks.
    """
    groups: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for param in parameters:
        if param.requires_grad:  # frozen parameters (fine-tuning) are not sent
            groups.setdefault(param.dtype, []).append(param)
    extras_tensor = torch.tensor(list(extras), dtype=torch.float64, device=world.device)
    if not groups:  # nothing trains: only the extras travel
        return world.all_reduce_sum(extras_tensor, f"{where}: loss all-reduce").tolist()
    summed: list[float] = []
    for index, (dtype, params) in enumerate(groups.items()):
        has_grad = [float(p.grad is not None) for p in params]
        riders = torch.tensor(has_grad, dtype=torch.float64, device=world.device)
        if index == 0:  # the extras ride with the first group (in its dtype: flags, a loss)
            riders = torch.cat([riders, extras_tensor])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([*(g.reshape(-1) for g in grads), riders.to(dtype)])
        world.all_reduce_sum(flat, f"{where}: gradient all-reduce")
        tail = flat[flat.numel() - riders.numel() :].to(torch.float64).tolist()
        offset = 0  # the summed gradients stay views of the one flat buffer (no copies)
        for param, summed_flag in zip(params, tail, strict=False):
            size = param.numel()
            keep = summed_flag > 0.0
            param.grad = flat[offset : offset + size].view_as(param) if keep else None
            offset += size
        if index == 0:
            summed = tail[len(params) :]
    return summed


def reduce_loss_parts(
    parts: LossParts, loss_fn: WeightedLoss, world: World, what: str
) -> LossParts:
    """Per-term sums and counts summed over ranks (every term of ``loss_fn`` present)."""
    if not world.distributed:
        return parts
    names = sorted(loss_fn.weights)
    values = [parts.sums.get(n, 0.0) for n in names]
    values += [float(parts.counts.get(n, 0)) for n in names]
    total = world.all_reduce_sum(
        torch.tensor(values, dtype=torch.float64, device=world.device), what
    ).tolist()
    k = len(names)
    return LossParts(
        dict(zip(names, total[:k], strict=True)),
        {n: int(round(c)) for n, c in zip(names, total[k:], strict=True)},
    )


def reduce_errors(errors: ErrorAccumulator, world: World, what: str) -> ErrorAccumulator:
    """Error sums and counts summed over ranks."""
    if not world.distributed:
        return errors
    totals = world.all_reduce_sum(errors.totals().to(world.device), what)
    return ErrorAccumulator.from_totals(totals, errors.groups)


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, world: World) -> None:
    """Rank 0's parameters and buffers on every rank (start of a run)."""
    if not world.distributed:
        return
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        world.broadcast(tensor.data, f"broadcasting rank 0's {name}")


@torch.no_grad()
def check_in_sync(module: torch.nn.Module, world: World, where: str) -> None:
    """Raise unless every rank holds bit-identical parameters (compared by checksums).

    Raises:
        RuntimeError: the ranks' parameters differ (a bug: the reductions must keep them equal).
    """
    if not world.distributed:
        return
    flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for p in module.parameters()])
    positions = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
    checksum = torch.stack([flat.sum(), (flat * positions).sum()]).to(world.device)
    extremes = torch.cat([checksum, -checksum])  # max of both: the max and minus the min
    with world._collective(f"{where}: parameter checksum"):
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    if not (torch.equal(extremes[:2], checksum) and torch.equal(-extremes[2:], checksum)):
        raise RuntimeError(
            f"rank {world.rank}: {where}: the ranks' parameters differ (checksums "
            f"{checksum.tolist()}, max {extremes[:2].tolist()}, min {(-extremes[2:]).tolist()})"
        )
