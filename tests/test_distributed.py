"""bncourse.distributed: the launcher, scratch sync BN (two real processes), ghost BN."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bncourse import distributed as D
from bncourse import models


# -- the launcher ------------------------------------------------------------------------------
def test_a_failing_worker_is_reported_with_its_traceback_and_nothing_hangs():
    # (that results come back by rank is tested by every two-process test below)
    with pytest.raises(D.WorkerError, match=r"rank 1 raised:(.|\n)*rank 1 was told to fail"):
        D.run_workers(D.allreduce_worker, 2, (1.0, 0.0, 1), timeout=60)


def test_a_hanging_worker_is_killed_at_the_timeout():
    with pytest.raises(D.WorkerError, match="did not finish within"):
        D.run_workers(D.allreduce_worker, 2, (1.0, 60.0), timeout=3)


def test_run_workers_rejects_what_spawned_processes_cannot_import_and_bad_arguments():
    with pytest.raises(TypeError, match="importable"):
        D.run_workers(lambda rank, world: rank, 2)
    with pytest.raises(ValueError, match="world_size"):
        D.run_workers(D.allreduce_worker, 0)
    with pytest.raises(ValueError, match="timeout"):
        D.run_workers(D.allreduce_worker, 2, (1.0,), timeout=0)


def test_free_port_is_a_loopback_port():
    assert 0 < D.free_port() < 65536


# -- sync BN from scratch, two processes -------------------------------------------------------
CASES = {
    "float64, 2d, 3 and 7 examples": (D.make_case([3, 7], dtype=torch.float64, seed=1), 1e-10),
    "float32, 2d, 5 and 2 examples": (D.make_case([5, 2], dtype=torch.float32, seed=2), 2e-5),
    "float64, 1d, 4 and 9 examples": (D.make_case([4, 9], channels=5, spatial=(), dtype=torch.float64, seed=3), 1e-10),
    "float32, offset 1e4": (D.make_case([6, 10], spatial=(3, 3), dtype=torch.float32, offset=1e4, seed=4), None),
}


@pytest.fixture(scope="module")
def two_process_results():
    cases = [case for case, _ in CASES.values()]
    per_rank = D.run_workers(D.sync_bn_worker, 2, (cases,), timeout=120)
    return {name: [per_rank[r][i] for r in range(2)] for i, name in enumerate(CASES)}


@pytest.mark.parametrize("name", [n for n, (_, tol) in CASES.items() if tol is not None])
@pytest.mark.parametrize("method", D.COMBINE_METHODS)
def test_sync_bn_equals_single_process_bn_on_the_global_batch(two_process_results, name, method):
    case, tol = CASES[name]
    diffs = D.compare_to_reference([r[method] for r in two_process_results[name]], D.batch_norm_reference(case))
    assert set(diffs) == {"out", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var"}
    scale = max(1.0, D.batch_norm_reference(case)["grad_weight"].abs().max().item())
    assert all(d <= tol * scale for d in diffs.values()), diffs


def test_chan_combination_survives_a_large_offset_in_float32_and_the_sums_do_not(two_process_results):
    case, _ = CASES["float32, offset 1e4"]
    x = case["x"].double()
    true_var = x.var([0, 2, 3], unbiased=False)
    err = {m: ((two_process_results["float32, offset 1e4"][0][m]["var"].double() - true_var).abs() / true_var).max().item()
           for m in D.COMBINE_METHODS}
    assert err["chan"] < 1e-3, err
    assert err["sums"] > 100 * err["chan"], err


# -- PyTorch's SyncBatchNorm -------------------------------------------------------------------
def test_pytorchs_sync_batchnorm_raises_on_cpu_tensors_in_a_process_group():
    available, reason = D.cuda_sync_bn_available()
    if not torch.cuda.is_available():
        assert not available and "GPU" in reason
    with pytest.raises(D.WorkerError, match="SyncBatchNorm expected input tensor to be on GPU"):
        D.run_workers(D.builtin_sync_bn_worker, 2, (D.make_case([3, 4]), "cpu"), timeout=60)


_AVAILABLE, _REASON = D.cuda_sync_bn_available()


@pytest.mark.skipif(not _AVAILABLE, reason=_REASON)
def test_pytorchs_sync_batchnorm_equals_the_scratch_one_on_gpus():  # pragma: no cover - needs 2 CUDA GPUs
    case = D.make_case([3, 7], dtype=torch.float64, seed=5)
    results = D.run_workers(D.builtin_sync_bn_worker, 2, (case,), timeout=180, backend="nccl")
    for key in ("out", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var"):
        for r in results:
            assert torch.allclose(r["builtin"][key], r["scratch"][key], atol=1e-8), key


# -- sync BN in one process and conversion --------------------------------------------------------
def test_without_a_process_group_sync_bn_is_plain_bn_and_convert_keeps_everything():
    torch.manual_seed(0)
    model = models.LeNet(batch_norm=True)
    for bn in models.batchnorm_layers(model):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.normal_(), bn.running_mean.normal_()
    converted = D.convert_sync_batchnorm(model)
    assert all(isinstance(m, D.SyncBatchNorm) for m in models.batchnorm_layers(converted))
    assert not any(isinstance(m, D.SyncBatchNorm) for m in models.batchnorm_layers(model)), "the input was changed"
    for k, v in model.state_dict().items():
        assert torch.equal(v, converted.state_dict()[k]), k
    x = torch.randn(8, 1, 28, 28)
    for mode in ("train", "eval"):
        getattr(model, mode)(), getattr(converted, mode)()
        assert torch.allclose(model(x), converted(x), atol=1e-5), mode
    for k, v in model.state_dict().items():
        assert torch.allclose(v.double(), converted.state_dict()[k].double(), atol=1e-6), k


def test_sync_bn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        D.SyncBatchNorm(3, method="welford?")
    with pytest.raises(ValueError, match="momentum"):
        D.SyncBatchNorm(3, momentum="0.1")
    with pytest.raises(ValueError, match="momentum"):
        D.SyncBatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="affine=True"):
        D.SyncBatchNorm(3, affine=False)
    # momentum=None is the cumulative average, as for nn.BatchNorm (issue 25: reestimate_bn sets it)
    bn, ref = D.SyncBatchNorm(3, momentum=None), torch.nn.BatchNorm1d(3, momentum=None)
    for x in (torch.randn(8, 3), torch.randn(8, 3) * 2 + 1):
        bn(x), ref(x)
    assert torch.allclose(bn.running_mean, ref.running_mean) and torch.allclose(bn.running_var, ref.running_var)
    with pytest.raises(ValueError, match=r"\(N, C, \.\.\.\)"):
        D.sync_batch_norm(torch.randn(4), torch.ones(4), torch.zeros(4))
    with pytest.raises(TypeError, match="nn.Module"):
        D.convert_sync_batchnorm("LeNet")


def test_combinations_agree_with_the_statistics_of_the_whole_batch():
    x = torch.randn(11, 4, 3, dtype=torch.float64) * 2 + 5
    parts = [x[:4], x[4:]]
    n, s, q = (torch.stack(t).sum(0) for t in zip(*[D.local_statistics(p) for p in parts]))
    mean, var = D.combine_sums(n, s, q)
    counts = torch.tensor([[4.0 * 3] * 4, [7.0 * 3] * 4], dtype=torch.float64)
    means = torch.stack([p.mean([0, 2]) for p in parts])
    m2s = torch.stack([((p - p.mean([0, 2], keepdim=True)) ** 2).sum([0, 2]) for p in parts])
    mean_c, var_c = D.combine_chan(counts, means, m2s)
    for m, v in ((mean, var), (mean_c, var_c)):
        assert torch.allclose(m, x.mean([0, 2])) and torch.allclose(v, x.var([0, 2], unbiased=False))


# -- ghost BN --------------------------------------------------------------------------------------
def test_ghost_bn_is_bn_on_each_virtual_batch_forward_backward_and_running_statistics():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 4, 4, dtype=torch.float64) * 2 + 1
    ghost = D.GhostBatchNorm(3, virtual_batch_size=4, dtype=torch.float64)
    replicas = [nn.BatchNorm2d(3, dtype=torch.float64) for _ in range(3)]
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 1.5), ghost.bias.normal_()
        for r in replicas:
            r.load_state_dict(ghost.state_dict())
    xg = x.clone().requires_grad_(True)
    out = ghost(xg)
    parts = [xp.clone().requires_grad_(True) for xp in x.split(4)]
    ref = torch.cat([r(p) for r, p in zip(replicas, parts)])
    assert torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.allclose(xg.grad, torch.cat([p.grad for p in parts]), atol=1e-12)
    assert torch.allclose(ghost.weight.grad, sum(r.weight.grad for r in replicas), atol=1e-12)
    for buf in ("running_mean", "running_var"):
        average = torch.stack([getattr(r, buf) for r in replicas]).mean(0)
        assert torch.allclose(getattr(ghost, buf), average, atol=1e-12), buf
    assert torch.allclose(D.ghost_batch_norm(x, 12), F.batch_norm(x, None, None, training=True), atol=1e-12)
    with pytest.raises(ValueError, match="does not split"):
        ghost(torch.randn(10, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="virtual_batch_size"):
        D.GhostBatchNorm(3, virtual_batch_size=0)


def test_convert_ghost_batchnorm_copies_and_leaves_the_input_alone():
    model = models.LeNet(batch_norm=True)
    ghost = D.convert_ghost_batchnorm(model, 8)
    assert all(isinstance(m, D.GhostBatchNorm) and m.virtual_batch_size == 8 for m in models.batchnorm_layers(ghost))
    assert all(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in models.batchnorm_layers(model))


# -- DDP with unsynchronized BN, two processes ------------------------------------------------------
def test_ddp_replicas_use_their_own_batch_and_ghost_bn_reproduces_them():
    torch.manual_seed(0)
    init = models.LeNet(batch_norm=True)
    state = copy.deepcopy(init.state_dict())
    xs, ys = torch.randn(2, 8, 1, 28, 28), torch.randint(0, 10, (2, 8))
    runs = D.run_workers(D.per_replica_worker, 2, (state, xs, ys, 0.1, [(True, False), (False, True)]), timeout=120)
    (plain0, sync0), (plain1, sync1) = runs
    single = copy.deepcopy(init).train()
    assert torch.allclose(plain1["logits"][0], single(xs[0, 4:]), atol=1e-5)      # rank 1: BN over its own 4
    assert torch.equal(plain0["running_mean_on_entry"][1], plain1["running_mean_on_entry"][1])  # rank 0's broadcast
    ghost = D.convert_ghost_batchnorm(init, 4)
    optimizer = torch.optim.SGD(ghost.parameters(), lr=0.1)
    for step in range(2):
        logits = ghost(xs[step])
        assert torch.allclose(logits, torch.cat([plain0["logits"][step], plain1["logits"][step]]), atol=1e-5)
        loss = F.cross_entropy(logits, ys[step])
        optimizer.zero_grad(), loss.backward(), optimizer.step()
    full = copy.deepcopy(init).train()
    assert torch.allclose(torch.cat([sync0["logits"][0], sync1["logits"][0]]), full(xs[0]), atol=1e-5)
