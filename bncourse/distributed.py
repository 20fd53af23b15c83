"""Batch normalization across devices: a process launcher, sync BN from scratch, ghost BN.

* :func:`run_workers` starts ``world_size`` processes (``torch.multiprocessing``, spawn) that join one
  ``torch.distributed`` process group (gloo on CPU, on a free port of 127.0.0.1 chosen at run time), runs
  one worker function in each and returns what each rank returned. A worker that fails or hangs never
  hangs the caller: every process is joined or killed, and the error names the rank and shows its traceback.
* :func:`sync_batch_norm` / :class:`SyncBatchNorm` -- BN whose statistics are those of the *global* batch,
  the union of every rank's mini-batch: an autograd Function whose forward combines per-rank statistics and
  whose backward all-reduces the two per-channel gradient sums. :func:`convert_sync_batchnorm` swaps it into
  a model, as ``nn.SyncBatchNorm.convert_sync_batchnorm`` does for PyTorch's own (GPU-only) layer.
* :func:`ghost_batch_norm` / :class:`GhostBatchNorm` -- one large batch normalized in virtual batches on one
  device: what unsynchronized replicas compute.
* The worker functions the course's notebook 08 runs (they must live in an importable module: spawned
  processes import them by name).
"""

from __future__ import annotations

__all__ = [
    "WorkerError", "free_port", "run_workers",
    "COMBINE_METHODS", "local_statistics", "combine_sums", "combine_chan", "global_statistics",
    "SyncBatchNormFunction", "sync_batch_norm", "SyncBatchNorm", "convert_sync_batchnorm",
    "ghost_batch_norm", "GhostBatchNorm", "convert_ghost_batchnorm", "sweep_replica_batch",
    "allreduce_worker", "per_replica_worker", "sync_bn_worker", "make_case", "batch_norm_reference", "compare_to_reference", "builtin_sync_bn_worker", "allreduce_cost_worker",
    "cuda_sync_bn_available",
]

import copy
import datetime
import math
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .bnstate import is_frozen
from .checks import TORCH_SEEDS, positive_finite, positive_int, probability
from .checks import seed as seed_check


# ---------------------------------------------------------------------------------------------
# The launcher
# ---------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker process failed, died or did not finish in time; the message names the rank and why."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_interface() -> str | None:
    return {"linux": "lo", "darwin": "lo0"}.get(sys.platform)


def _worker_main(rank: int, world_size: int, port: int, backend: str, fn: Callable[..., Any], args: tuple,
                 outdir: str, timeout_s: float) -> None:
    """Body of each spawned process: join the group, run ``fn(rank, world_size, *args)``, save its result."""
    torch.set_num_threads(1)
    out = Path(outdir)
    try:
        if _loopback_interface() is not None:
            os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_interface())
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        torch.save(result, out / f"rank{rank}.part")
        os.replace(out / f"rank{rank}.part", out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise SystemExit(1)


def run_workers(fn: Callable[..., Any], world_size: int = 2, args: Sequence[Any] = (), timeout: float = 120.0,
                backend: str = "gloo") -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes of one process group.

    Each process is started with the ``spawn`` method (so ``fn`` must be importable: a module-level
    function), uses one CPU thread, and joins a ``torch.distributed`` group over TCP on 127.0.0.1 (a port
    chosen now). Results come back through files in a temporary folder, loaded with ``torch.load``.

    Args:
        fn: the worker, a module-level function; its return value must be saveable by ``torch.save``.
        world_size: number of processes, >= 1.
        args: further arguments of ``fn`` (picklable).
        timeout: seconds for the whole run; then every process still alive is killed.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (CUDA GPUs).

    Returns:
        The return values of ``fn``, indexed by rank.

    Raises:
        TypeError: ``fn`` is not callable or not importable by name.
        ValueError: ``world_size`` or ``timeout`` is not positive.
        WorkerError: a worker raised (its traceback is in the message), died, or the timeout passed.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a module-level function, got {type(fn).__name__}")
    if getattr(fn, "__qualname__", "").count("<") or getattr(fn, "__module__", None) in (None, "__main__"):
        raise TypeError(f"fn must be importable by the spawned processes (a function defined at the top level of a "
                        f"module, not in a notebook or a closure), got {getattr(fn, '__qualname__', fn)!r} "
                        f"from module {getattr(fn, '__module__', None)!r}")
    positive_int("world_size", world_size)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bncourse-dist-") as outdir:
        port = free_port()
        procs = [ctx.Process(target=_worker_main, args=(rank, world_size, port, backend, fn, tuple(args), outdir,
                                                         float(timeout)), daemon=True)
                 for rank in range(world_size)]
        deadline = time.monotonic() + timeout
        started: list[Any] = []
        try:
            for p in procs:
                p.start()
                started.append(p)
            while any(p.is_alive() for p in procs):
                failed = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if failed:
                    break                                  # one rank failed: the others would wait for it forever
                if time.monotonic() > deadline:
                    raise WorkerError(f"the workers did not finish within {timeout:g} s "
                                      f"(still running: ranks {[r for r, p in enumerate(procs) if p.is_alive()]})")
                time.sleep(0.05)
        finally:                                           # every process joined, or killed and joined
            for p in started:
                if p.is_alive():
                    p.kill()
            for p in started:
                p.join(timeout=10)
        errors = []
        for rank, p in enumerate(procs):
            err = Path(outdir) / f"rank{rank}.err"
            if err.exists():
                errors.append(f"rank {rank} raised:\n{err.read_text()}")
            elif p.exitcode not in (0, None) and not (Path(outdir) / f"rank{rank}.pt").exists():
                errors.append(f"rank {rank} exited with code {p.exitcode} (killed after another rank failed, or crashed)")
        if errors:
            raise WorkerError("\n".join(errors))
        return [torch.load(Path(outdir) / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


# ---------------------------------------------------------------------------------------------
# Statistics of a batch split over ranks
# ---------------------------------------------------------------------------------------------
#: How :func:`global_statistics` combines the ranks' statistics.
COMBINE_METHODS = ("sums", "chan")


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


def local_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel ``(count, sum, sum of squares)`` of ``x`` of shape (N, C, ...), channel dimension 1."""
    dims = _reduce_dims(x)
    count = torch.full((x.shape[1],), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
    return count, x.sum(dims), (x * x).sum(dims)


def combine_sums(count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance from the global per-channel count, sum and sum of squares.

    ``var = E[x²] − E[x]²``: exact in exact arithmetic, one all-reduce of 3·C numbers, but in floating
    point it subtracts two large, nearly equal numbers when the mean is large against the spread.
    """
    mean = total / count
    var = total_sq / count - mean * mean
    return mean, var


def combine_chan(counts: torch.Tensor, means: torch.Tensor, m2s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance from every rank's count, mean and M2 (sum of squared deviations from its mean).

    Chan, Golub & LeVeque's parallel combination: ``mean = Σ nᵢ·meanᵢ / N`` and
    ``M2 = Σ M2ᵢ + Σ nᵢ·(meanᵢ − mean)²``, ``var = M2 / N``. Each term is a sum of squares of
    deviations, so nothing cancels, whatever the offset. Arguments have shape (world_size, C).
    """
    n = counts.sum(0)
    mean = (counts * means).sum(0) / n
    m2 = m2s.sum(0) + (counts * (means - mean) ** 2).sum(0)
    return mean, m2 / n


def global_statistics(x: torch.Tensor, method: str = "chan", group: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel ``(count, mean, biased variance)`` of the global batch: ``x`` on this rank, joined over ``group``.

    ``method="sums"`` all-reduces ``(count, Σx, Σx²)`` and uses :func:`combine_sums`;
    ``method="chan"`` all-gathers each rank's ``(count, mean, M2)`` and uses :func:`combine_chan`.
    Without an initialized process group the statistics are this batch's own.
    """
    if method not in COMBINE_METHODS:
        raise ValueError(f"method must be one of {COMBINE_METHODS}, got {method!r}")
    distributed = dist.is_available() and dist.is_initialized()
    if method == "sums":
        stats = torch.stack(local_statistics(x))                     # (3, C): count, sum, sum of squares
        if distributed:
            dist.all_reduce(stats, group=group)                      # one message: the global sums
        mean, var = combine_sums(*stats)
        return stats[0], mean, var
    dims = _reduce_dims(x)
    count = x.numel() // x.shape[1]
    mean = x.mean(dims)
    m2 = ((x - mean.view(1, -1, *[1] * (x.dim() - 2))) ** 2).sum(dims)
    local = torch.stack([torch.full_like(mean, count), mean, m2])    # (3, C)
    if distributed:
        world = dist.get_world_size(group)
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local, group=group)                   # one message: every rank's (n, mean, M2)
        gathered = torch.stack(parts)                                # (world_size, 3, C)
    else:
        gathered = local.unsqueeze(0)
    mean, var = combine_chan(gathered[:, 0], gathered[:, 1], gathered[:, 2])
    return gathered[:, 0].sum(0), mean, var


# ---------------------------------------------------------------------------------------------
# Sync BN from scratch
# ---------------------------------------------------------------------------------------------
def _view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, *[1] * (x.dim() - 2))


class SyncBatchNormFunction(torch.autograd.Function):
    """BN over the global batch. Forward: global statistics (:func:`global_statistics`). Backward: the two
    per-channel sums ``Σ dy`` and ``Σ dy·x̂`` all-reduced (one message), because every input's gradient goes
    through the global mean and variance, which depend on every rank's inputs.

    The γ and β gradients returned are this rank's share (``Σ_local dy·x̂``, ``Σ_local dy``): summed over ranks
    -- which DDP's gradient all-reduce does -- they are the gradients of the global batch.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, method, group):
        count, mean, var = global_statistics(x, method, group)
        invstd = torch.rsqrt(var + eps)
        x_hat = (x - _view(mean, x)) * _view(invstd, x)
        if running_mean is not None:
            n = count[0]
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))   # unbiased, as nn.BatchNorm
        ctx.save_for_backward(x_hat, weight, invstd, count)
        ctx.group = group
        return x_hat * _view(weight, x) + _view(bias, x)

    @staticmethod
    def backward(ctx, grad_out):
        x_hat, weight, invstd, count = ctx.saved_tensors
        dims = _reduce_dims(grad_out)
        sums = torch.stack([grad_out.sum(dims), (grad_out * x_hat).sum(dims)])   # (2, C), this rank's share
        grad_bias, grad_weight = sums[0].clone(), sums[1].clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums, group=ctx.group)                              # the global Σ dy, Σ dy·x̂
        mean_dy, mean_dy_xhat = sums[0] / count, sums[1] / count
        grad_x = _view(weight * invstd, grad_out) * (
            grad_out - _view(mean_dy, grad_out) - x_hat * _view(mean_dy_xhat, grad_out))
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


def sync_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    running_mean: torch.Tensor | None = None, running_var: torch.Tensor | None = None,
                    eps: float = 1e-5, momentum: float = 0.1, method: str = "chan", group: Any = None) -> torch.Tensor:
    """Training-mode BN of ``x`` (N, C, ...) with the statistics of the global batch over ``group``.

    Updates ``running_mean`` / ``running_var`` in place (if given) with the global mean and the unbiased
    global variance, identically on every rank. Ranks may hold different batch sizes.
    """
    _check_sync_args(x, weight, bias, running_mean, running_var, eps, momentum, method, group)
    return SyncBatchNormFunction.apply(x, weight, bias, running_mean, running_var, float(eps), float(momentum),
                                       method, group)


def _world_size(group: Any) -> int | None:
    """The number of processes of ``group``, or ``None`` without an initialized process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(group)
    return None


def _check_sync_args(x: object, weight: object, bias: object, running_mean: object, running_var: object,
                     eps: object, momentum: object, method: object, group: Any) -> None:
    """The checks of :func:`sync_batch_norm`, all made before anything (a running statistic) is changed."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor of shape (N, C, ...), got {getattr(x, 'shape', type(x).__name__)}")
    channels = x.shape[1]
    for name, value in (("weight", weight), ("bias", bias)):
        if not isinstance(value, torch.Tensor) or value.shape != (channels,):
            raise TypeError(f"{name} must be a tensor of shape ({channels},) (sync BN is affine: pass torch.ones/"
                            f"torch.zeros for no scale/shift), got {getattr(value, 'shape', type(value).__name__)}")
    if (running_mean is None) != (running_var is None):
        raise TypeError("running_mean and running_var must both be tensors or both be None, got "
                        f"{type(running_mean).__name__} and {type(running_var).__name__}")
    for name, value in (("running_mean", running_mean), ("running_var", running_var)):
        if value is not None and (not isinstance(value, torch.Tensor) or value.shape != (channels,)):
            raise TypeError(f"{name} must be None or a tensor of shape ({channels},), "
                            f"got {getattr(value, 'shape', type(value).__name__)}")
    positive_finite("eps", eps)
    probability("momentum", momentum)
    if method not in COMBINE_METHODS:
        raise ValueError(f"method must be one of {COMBINE_METHODS}, got {method!r}")
    if x.shape[0] == 0:
        raise ValueError(f"x holds no example (shape {tuple(x.shape)}): every rank must hold at least one")
    world = _world_size(group)
    if (world is None or world == 1) and x.numel() // max(channels, 1) < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)} "
                         f"and {'no process group' if world is None else 'a process group of one process'}: the "
                         "global batch is this one, and BN cannot normalize one value per channel")


class _AnyRankBatchNorm(_BatchNorm):
    """What the course's two BN variants below share: input of any rank >= 2, torch's eval path."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input of shape (N, C, ...), got {input.dim()}D input")

    def _training_step(self, input: torch.Tensor) -> bool:
        """Check ``input``; in training mode count the batch and return True."""
        self._check_input_dim(input)
        if self.training:
            self.num_batches_tracked.add_(1)
        return self.training

    def _eval_forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def _average_factor(self) -> float:
        """The weight of this batch in the running statistics: ``momentum``, or with ``momentum=None``
        (PyTorch's cumulative average, as :func:`bncourse.bnstate.reestimate_bn` sets) ``1 / batches seen``."""
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return float(self.momentum)


class SyncBatchNorm(_AnyRankBatchNorm):
    """Scratch sync BN, a drop-in for ``nn.BatchNorm1d/2d/3d`` (same parameters and buffers) that normalizes
    with the global batch's statistics in training mode and with the running statistics in eval mode.

    Args:
        num_features, eps, momentum, affine, track_running_stats: as for ``nn.BatchNorm2d`` (``momentum`` a
            number in [0, 1] or ``None``, the cumulative average; ``affine`` and ``track_running_stats`` must be True).
        method: ``"chan"`` (default, robust to large offsets) or ``"sums"``; see :func:`global_statistics`.
        group: the process group (default: the whole world).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, method: str = "chan", group: Any = None,
                 device: Any = None, dtype: Any = None) -> None:
        if affine is not True or track_running_stats is not True:
            raise ValueError("SyncBatchNorm supports affine=True and track_running_stats=True only, got "
                             f"affine={affine!r}, track_running_stats={track_running_stats!r}")
        if momentum is not None:
            probability("momentum", momentum)
        if method not in COMBINE_METHODS:
            raise ValueError(f"method must be one of {COMBINE_METHODS}, got {method!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.method = method
        self.group = group

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training:                                   # every check before any buffer changes
            self._check_input_dim(input)
            _check_sync_args(input, self.weight, self.bias, self.running_mean, self.running_var, self.eps,
                             0.0 if self.momentum is None else self.momentum, self.method, self.group)
        if not self._training_step(input):
            return self._eval_forward(input)
        return sync_batch_norm(input, self.weight, self.bias, self.running_mean, self.running_var, self.eps,
                               self._average_factor(), self.method, self.group)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", method={self.method!r}"


def _convertible(module: nn.Module) -> bool:
    """Whether :func:`_replace_batchnorms` replaces ``module``: torch's BatchNorm1d/2d/3d and the course's scratch
    :class:`bncourse.layers.BatchNorm` (a drop-in for them, with the same parameters and buffers)."""
    from .layers import BatchNorm as ScratchBatchNorm

    return type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, ScratchBatchNorm)


def _check_convertible(model: nn.Module, target: type, what: str, keep: Callable[[nn.Module], bool]) -> None:
    """Refuse, before copying anything, a model the converter would convert only in part (or not at all).

    Every layer that normalizes with batch statistics must be one :func:`_replace_batchnorms` replaces (and
    affine, with running statistics) or one ``keep`` accepts as it is; at least one must be there.
    """
    from .layers import BatchNorm as ScratchBatchNorm

    found = 0
    for name, m in model.named_modules():
        if isinstance(m, (_BatchNorm, ScratchBatchNorm)) and is_frozen(m):
            raise ValueError(f"{what} would unfreeze layer {name or '(the model itself)'!r}, frozen by bnstate.freeze_bn "
                             "(the converted layer is a new one, in the model's mode, with trainable γ and β): convert "
                             "first, then freeze the converted model")
        if _convertible(m):
            if m.weight is None or m.bias is None or m.running_mean is None:
                raise ValueError(f"{what} needs affine layers with running statistics (affine=True, bias=True, "
                                 f"track_running_stats=True), got layer {name or '(the model itself)'!r}: {m}")
            found += 1
        elif isinstance(m, (_BatchNorm, ScratchBatchNorm)):
            if not keep(m):
                raise TypeError(f"{what} converts nn.BatchNorm1d/2d/3d and bncourse.layers.BatchNorm, but "
                                f"layer {name or '(the model itself)'!r} is a {type(m).__name__}, which it cannot convert: converting "
                                "the rest would leave a model that is only partly "
                                f"{target.__name__}. Convert from the model with plain BN layers")
            found += 1
    if not found:
        raise ValueError(f"{what}: {type(model).__name__} has no batch-norm layer to convert")


def _replace_batchnorms(module: nn.Module, make: Callable[[_BatchNorm], nn.Module]) -> nn.Module:
    if _convertible(module):
        new = make(module)
        with torch.no_grad():
            new.weight.copy_(module.weight)
            new.bias.copy_(module.bias)
            new.running_mean.copy_(module.running_mean)
            new.running_var.copy_(module.running_var)
            new.num_batches_tracked.copy_(module.num_batches_tracked)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module._modules[name] = _replace_batchnorms(child, make)
    return module


def convert_sync_batchnorm(module: nn.Module, method: str = "chan", group: Any = None) -> nn.Module:
    """A deep copy of ``module`` with every ``nn.BatchNorm1d/2d/3d`` and every scratch
    :class:`bncourse.layers.BatchNorm` replaced by the scratch :class:`SyncBatchNorm` (parameters and buffers
    copied), like ``nn.SyncBatchNorm.convert_sync_batchnorm`` for PyTorch's layer.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``, or holds a batch-norm layer of another kind (e.g.
            :class:`GhostBatchNorm`) that would stay unsynchronized; layers already :class:`SyncBatchNorm` stay.
        ValueError: no batch-norm layer at all, a layer without γ/β or running statistics, or a bad ``method``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if method not in COMBINE_METHODS:
        raise ValueError(f"method must be one of {COMBINE_METHODS}, got {method!r}")
    _check_convertible(module, SyncBatchNorm, "convert_sync_batchnorm", lambda m: isinstance(m, SyncBatchNorm))
    return _replace_batchnorms(copy.deepcopy(module), lambda bn: SyncBatchNorm(
        bn.num_features, bn.eps, bn.momentum, method=method, group=group,
        device=bn.weight.device, dtype=bn.weight.dtype))


# ---------------------------------------------------------------------------------------------
# Ghost BN
# ---------------------------------------------------------------------------------------------
def _virtual_batches(x: torch.Tensor, virtual_batch_size: int) -> torch.Tensor:
    """``x`` (N, C, ...) viewed as (N / virtual_batch_size, virtual_batch_size, C, ...)."""
    positive_int("virtual_batch_size", virtual_batch_size)
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor of shape (N, C, ...), got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] % virtual_batch_size:
        raise ValueError(f"the batch of {x.shape[0]} examples does not split into virtual batches of "
                         f"{virtual_batch_size}: use a batch size that is a multiple of it (e.g. drop_last=True)")
    if x.shape[0] == 0 or virtual_batch_size * math.prod(x.shape[2:]) < 2:
        raise ValueError(f"Expected more than 1 value per channel in each virtual batch when training, got virtual "
                         f"batches of {virtual_batch_size} example(s) of shape {tuple(x.shape[1:])}: BN cannot "
                         "normalize one value per channel (it would output β and a NaN variance). Use virtual "
                         "batches of at least 2 examples")
    return x.reshape(x.shape[0] // virtual_batch_size, virtual_batch_size, *x.shape[1:])


def ghost_batch_norm(x: torch.Tensor, virtual_batch_size: int, weight: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Training-mode BN of ``x`` (N, C, ...) in consecutive virtual batches of ``virtual_batch_size`` examples:
    each virtual batch is normalized with its own mean and biased variance (Hoffer et al., 2017)."""
    groups = _virtual_batches(x, virtual_batch_size)          # (virtual batches, examples, C, ...)
    dims = [1] + list(range(3, groups.dim()))                 # within one virtual batch, per channel
    mean = groups.mean(dims, keepdim=True)
    var = groups.var(dims, unbiased=False, keepdim=True)
    out = ((groups - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        out = out * _view(weight, x)
    if bias is not None:
        out = out + _view(bias, x)
    return out


class GhostBatchNorm(_AnyRankBatchNorm):
    """BN over virtual batches of ``virtual_batch_size`` examples in training mode; the running statistics are
    updated once per call with the *average* over the virtual batches of their means and unbiased variances --
    the average of what replicas that each saw one virtual batch would hold. Eval mode uses the running statistics.
    """

    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 device: Any = None, dtype: Any = None) -> None:
        positive_int("virtual_batch_size", virtual_batch_size)
        if momentum is not None:                            # None: the cumulative average, as nn.BatchNorm
            probability("momentum", momentum)
        super().__init__(num_features, eps, momentum, True, True, device=device, dtype=dtype)
        self.virtual_batch_size = virtual_batch_size

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._check_input_dim(input)
            _virtual_batches(input, self.virtual_batch_size)   # every check before any buffer changes
        if not self._training_step(input):
            return self._eval_forward(input)
        with torch.no_grad():
            groups = _virtual_batches(input.detach(), self.virtual_batch_size)
            dims = [1] + list(range(3, groups.dim()))
            means = groups.mean(dims).mean(0)                     # average over the virtual batches
            variances = groups.var(dims, unbiased=True).mean(0)
            factor = self._average_factor()
            self.running_mean.mul_(1 - factor).add_(factor * means)
            self.running_var.mul_(1 - factor).add_(factor * variances)
        return ghost_batch_norm(input, self.virtual_batch_size, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"


def convert_ghost_batchnorm(module: nn.Module, virtual_batch_size: int) -> nn.Module:
    """A deep copy of ``module`` with every ``nn.BatchNorm1d/2d/3d`` and every scratch
    :class:`bncourse.layers.BatchNorm` replaced by :class:`GhostBatchNorm` (parameters and buffers copied).

    A virtual batch must hold more than one value per channel: with ``virtual_batch_size=1`` a layer on
    (N, C) input (a dense layer's BN) raises in training, as ``nn.BatchNorm1d`` does on a batch of one.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``, or holds a batch-norm layer of another kind (e.g.
            :class:`SyncBatchNorm`, or :class:`GhostBatchNorm` of another virtual batch size).
        ValueError: no batch-norm layer at all, a layer without γ/β or running statistics, or a bad size.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    positive_int("virtual_batch_size", virtual_batch_size)
    _check_convertible(module, GhostBatchNorm, "convert_ghost_batchnorm",
                       lambda m: isinstance(m, GhostBatchNorm) and m.virtual_batch_size == virtual_batch_size)
    return _replace_batchnorms(copy.deepcopy(module), lambda bn: GhostBatchNorm(
        bn.num_features, virtual_batch_size, bn.eps, bn.momentum, device=bn.weight.device, dtype=bn.weight.dtype))


def sweep_replica_batch(train_data: Any, val_data: Any, global_batch: int, per_replica: Sequence[int],
                        seeds: Sequence[int], steps: int, lr: float = 0.1) -> dict[str, dict[int, float]]:
    """Validation accuracy (eval mode, running statistics) of BN-LeNets trained for ``steps`` SGD steps
    (momentum 0.9) on batches of ``global_batch``, as data-parallel replicas of ``per_replica`` examples each
    would train them: ``"unsynchronized, b=<n>"`` with :class:`GhostBatchNorm` of virtual batch ``n`` (proven
    equal to unsynchronized replicas), ``"synchronized"`` with plain BN on the global batch (proven equal to
    sync BN, whatever the split). Returns label -> seed -> accuracy; an accuracy is NaN when the model's
    validation logits were not finite (see :class:`bncourse.evaluate.Evaluation`).
    """
    from .evaluate import evaluate
    from .models import LeNet
    from .train import train_steps

    positive_int("global_batch", global_batch)
    positive_int("steps", steps)
    if isinstance(per_replica, (str, bytes)) or not isinstance(per_replica, Sequence) or not per_replica:
        raise TypeError(f"per_replica must be a non-empty list or tuple of ints, got {type(per_replica).__name__} "
                        f"{per_replica!r}")
    for n in per_replica:
        if positive_int("per_replica batch", n) > global_batch or global_batch % n:
            raise ValueError(f"each per-replica batch must divide global_batch={global_batch}, got {n}")
        if n == 1:
            raise ValueError("a per-replica batch of 1 cannot be trained: LeNet's dense BN layers would normalize one "
                             "value per channel (nn.BatchNorm1d raises on such a batch; ghost BN would output β and "
                             "a NaN running variance), so unsynchronized replicas of one example have no BN to "
                             "compare. Use per-replica batches of at least 2")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise TypeError(f"seeds must be a non-empty list or tuple of ints, got {type(seeds).__name__} {seeds!r}")
    for seed in seeds:
        seed_check("every seed", seed, upper=TORCH_SEEDS[1])
    configs = {f"unsynchronized, b={n}": n for n in per_replica} | {"synchronized": None}
    results: dict[str, dict[int, float]] = {label: {} for label in configs}
    for seed in seeds:
        for label, n in configs.items():
            torch.manual_seed(seed)
            model = LeNet(batch_norm=True)
            if n is not None:
                model = convert_ghost_batchnorm(model, n)
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
            train_steps(model, train_data.batches(global_batch, seed=seed, drop_last=True), optimizer, steps)
            results[label][seed] = evaluate(model, val_data, device="cpu").accuracy
    return results


# ---------------------------------------------------------------------------------------------
# The workers of notebook 08 (importable, so that spawned processes find them)
# ---------------------------------------------------------------------------------------------
def allreduce_worker(rank: int, world_size: int, value: float, sleep_s: float = 0.0,
                     fail_rank: int | None = None) -> torch.Tensor:
    """The smallest worker: all-reduce ``value + rank`` over the group (after ``sleep_s`` seconds on ranks > 0;
    rank ``fail_rank`` raises instead), to show and test :func:`run_workers`."""
    if rank == fail_rank:
        raise RuntimeError(f"rank {rank} was told to fail")
    if rank > 0 and sleep_s:
        time.sleep(sleep_s)
    t = torch.tensor([value + rank], dtype=torch.float64)
    dist.all_reduce(t)
    return t


def per_replica_worker(rank: int, world_size: int, state: dict[str, torch.Tensor], xs: torch.Tensor,
                       ys: torch.Tensor, lr: float, configs: Sequence[tuple[bool, bool]]) -> list[dict[str, Any]]:
    """DDP training of a BN-LeNet: rank ``r`` trains on its share ``xs[:, r*b:(r+1)*b]`` of each global batch.

    ``state`` is the initial ``state_dict`` of ``LeNet(batch_norm=True)``; ``xs``/``ys`` hold the global
    batches, shape (steps, world_size·b, ...); plain SGD with learning rate ``lr``. One run per
    ``(forward_sync_buffers, sync)`` in ``configs``: DDP's buffer broadcast at each forward on or off, and
    the BN layers converted to the scratch :class:`SyncBatchNorm` or not. Each run returns, per step, this
    rank's logits, the first BN layer's output and the running mean that layer held on entry (after
    DDP's broadcast), and at the end the model's parameters and buffers.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from .models import LeNet, batchnorm_layers

    runs = []
    for forward_sync_buffers, sync in configs:
        model = LeNet(batch_norm=True)
        model.load_state_dict(state)
        if sync:
            model = convert_sync_batchnorm(model)
        ddp = DDP(model, forward_sync_buffers=forward_sync_buffers)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
        first_bn = batchnorm_layers(model)[0]
        record: dict[str, list[torch.Tensor]] = {"logits": [], "bn_out": [], "running_mean_on_entry": []}
        first_bn.register_forward_pre_hook(lambda m, inp: record["running_mean_on_entry"].append(m.running_mean.clone()))
        first_bn.register_forward_hook(lambda m, inp, out: record["bn_out"].append(out.detach().clone()))
        b = xs.shape[1] // world_size
        for step in range(xs.shape[0]):
            x, y = xs[step, rank * b:(rank + 1) * b], ys[step, rank * b:(rank + 1) * b]
            logits = ddp(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()                                 # DDP averages the gradients over the ranks
            optimizer.step()
            record["logits"].append(logits.detach().clone())
        runs.append({**{k: torch.stack(v) for k, v in record.items()},
                     "state": {k: v.detach().clone() for k, v in model.state_dict().items()}})
    return runs


def sync_bn_worker(rank: int, world_size: int, cases: Sequence[dict[str, Any]],
                   methods: Sequence[str] = COMBINE_METHODS) -> list[dict[str, dict[str, torch.Tensor]]]:
    """Scratch sync BN on this rank's rows of global batches, one result per case and method.

    Each case is a dict with ``x`` (the global batch), ``grad_out`` (the gradient fed back), ``sizes`` (rank
    ``r`` holds ``sizes[r]`` consecutive rows), ``weight`` and ``bias``. For each method the result holds the
    output, the gradients of ``Σ out·grad_out`` with respect to this rank's input and to γ and β (this rank's
    share), the running statistics after the step, and the global mean and biased variance.
    """
    results = []
    for case in cases:
        x, grad_out, sizes = case["x"], case["grad_out"], case["sizes"]
        start = sum(sizes[:rank])
        x_local = x[start:start + sizes[rank]].clone().requires_grad_(True)
        g_local = grad_out[start:start + sizes[rank]]
        per_method = {}
        for method in methods:
            bn = SyncBatchNorm(x.shape[1], method=method, dtype=x.dtype)
            with torch.no_grad():
                bn.weight.copy_(case["weight"])
                bn.bias.copy_(case["bias"])
            x_local.grad = None
            out = bn(x_local)
            (out * g_local).sum().backward()
            _, mean, var = global_statistics(x_local.detach(), method)
            per_method[method] = {"out": out.detach(), "grad_x": x_local.grad.clone(),
                                  "grad_weight": bn.weight.grad.clone(), "grad_bias": bn.bias.grad.clone(),
                                  "running_mean": bn.running_mean.clone(), "running_var": bn.running_var.clone(),
                                  "mean": mean, "var": var}
        results.append(per_method)
    return results


def make_case(sizes: Sequence[int], channels: int = 3, spatial: Sequence[int] = (4, 4), dtype: torch.dtype = torch.float64,
              offset: float = 0.0, scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """A global batch for :func:`sync_bn_worker`: ``sum(sizes)`` examples of shape (channels, *spatial), values
    ``offset + scale·N(0, 1)`` plus a different shift per rank's rows, a random gradient, γ and β."""
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"sizes must be positive ints, one per rank, got {sizes!r}")
    g = torch.Generator().manual_seed(seed)
    shape = (sum(sizes), channels, *spatial)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + offset
    rank_of_row = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(list(sizes)))
    x += (rank_of_row.double() * 0.5 * scale).view(-1, *[1] * (len(shape) - 1))   # the ranks' data differ
    return {"x": x.to(dtype), "grad_out": torch.randn(shape, generator=g, dtype=torch.float64).to(dtype),
            "sizes": list(sizes), "weight": (torch.rand(channels, generator=g, dtype=torch.float64) + 0.5).to(dtype),
            "bias": torch.randn(channels, generator=g, dtype=torch.float64).to(dtype)}


def batch_norm_reference(case: dict[str, Any]) -> dict[str, torch.Tensor]:
    """What :func:`sync_bn_worker` must match: ``nn.BatchNorm1d/2d`` on the whole global batch ``case["x"]`` in
    one process -- output, input gradient, γ/β gradients and running statistics after one step."""
    x = case["x"]
    bn = (nn.BatchNorm1d if x.dim() in (2, 3) else nn.BatchNorm2d if x.dim() == 4 else nn.BatchNorm3d)(
        x.shape[1], dtype=x.dtype)
    with torch.no_grad():
        bn.weight.copy_(case["weight"])
        bn.bias.copy_(case["bias"])
    x = x.clone().requires_grad_(True)
    out = bn(x)
    (out * case["grad_out"]).sum().backward()
    return {"out": out.detach(), "grad_x": x.grad, "grad_weight": bn.weight.grad, "grad_bias": bn.bias.grad,
            "running_mean": bn.running_mean.detach(), "running_var": bn.running_var.detach()}


def compare_to_reference(per_rank: Sequence[dict[str, torch.Tensor]], reference: dict[str, torch.Tensor]
                         ) -> dict[str, float]:
    """Largest absolute difference of each quantity of one case of :func:`sync_bn_worker` (one dict per rank)
    from :func:`batch_norm_reference`: outputs and input gradients concatenated over the ranks, γ/β gradients
    summed over the ranks (as DDP does), running statistics of every rank."""
    joined = {
        "out": torch.cat([r["out"] for r in per_rank]),
        "grad_x": torch.cat([r["grad_x"] for r in per_rank]),
        "grad_weight": sum(r["grad_weight"] for r in per_rank),
        "grad_bias": sum(r["grad_bias"] for r in per_rank),
    }
    diffs = {k: (v.double() - reference[k].double()).abs().max().item() for k, v in joined.items()}
    for k in ("running_mean", "running_var"):
        diffs[k] = max((r[k].double() - reference[k].double()).abs().max().item() for r in per_rank)
    return diffs


def builtin_sync_bn_worker(rank: int, world_size: int, case: dict[str, Any], device: str = "cuda"
                           ) -> dict[str, dict[str, torch.Tensor]]:
    """PyTorch's ``nn.SyncBatchNorm`` (via ``convert_sync_batchnorm``) and the scratch one on ``cuda:rank``
    (NCCL backend, one GPU per rank), on this rank's rows of ``case`` as in :func:`sync_bn_worker`; returns
    both results. With ``device="cpu"`` PyTorch's layer raises its ValueError (it needs a GPU)."""
    if device == "cuda":
        torch.cuda.set_device(rank)
    device = torch.device("cuda", rank) if device == "cuda" else torch.device(device)
    x, grad_out, sizes, weight, bias = case["x"], case["grad_out"], case["sizes"], case["weight"], case["bias"]
    start = sum(sizes[:rank])
    results = {}
    for name in ("builtin", "scratch"):
        bn = nn.BatchNorm2d(x.shape[1]) if x.dim() == 4 else nn.BatchNorm1d(x.shape[1])
        with torch.no_grad():
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
        bn = bn.to(device=device, dtype=x.dtype)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(bn) if name == "builtin" else convert_sync_batchnorm(bn)
        x_local = x[start:start + sizes[rank]].to(device).clone().requires_grad_(True)
        out = model(x_local)
        (out * grad_out[start:start + sizes[rank]].to(device)).sum().backward()
        results[name] = {"out": out.detach().cpu(), "grad_x": x_local.grad.cpu(), "grad_weight": model.weight.grad.cpu(),
                         "grad_bias": model.bias.grad.cpu(), "running_mean": model.running_mean.cpu(),
                         "running_var": model.running_var.cpu()}
    return results


def allreduce_cost_worker(rank: int, world_size: int, state: dict[str, torch.Tensor], x: torch.Tensor,
                          y: torch.Tensor, rounds: int = 7, steps: int = 5) -> dict[str, list[float]]:
    """Seconds of ``steps`` DDP training steps of a BN-LeNet with plain and with scratch sync BN, timed in turn
    round after round (all ranks in lock step); for ``benchmarks/bench_distributed.py``."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from .models import LeNet

    b = x.shape[0] // world_size
    x, y = x[rank * b:(rank + 1) * b], y[rank * b:(rank + 1) * b]
    runs = {}
    for name in ("plain", "sync"):
        model = LeNet(batch_norm=True)
        model.load_state_dict(state)
        if name == "sync":
            model = convert_sync_batchnorm(model)
        ddp = DDP(model, forward_sync_buffers=False)
        runs[name] = (ddp, torch.optim.SGD(ddp.parameters(), lr=0.01))

    def run(name: str) -> float:
        ddp, optimizer = runs[name]
        dist.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(ddp(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        dist.barrier()
        return time.perf_counter() - start

    run("plain"), run("sync")                               # warm-up
    times: dict[str, list[float]] = {"plain": [], "sync": []}
    for _ in range(rounds):
        for name in times:
            times[name].append(run(name))
    return times


def cuda_sync_bn_available(world_size: int = 2) -> tuple[bool, str]:
    """Whether PyTorch's ``nn.SyncBatchNorm`` can run here with ``world_size`` processes, and why not."""
    if not torch.cuda.is_available():
        return False, "PyTorch's nn.SyncBatchNorm needs CUDA GPUs (it raises on CPU tensors); this machine has none"
    if torch.cuda.device_count() < world_size or not dist.is_nccl_available():
        return False, (f"PyTorch's nn.SyncBatchNorm needs one CUDA GPU per process and NCCL: {world_size} processes, "
                       f"{torch.cuda.device_count()} GPU(s), NCCL {'available' if dist.is_nccl_available() else 'missing'}")
    return True, f"{torch.cuda.device_count()} CUDA GPUs and NCCL"
