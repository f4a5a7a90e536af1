"""gcl_eval.util.distributed: devices, the launch (rank, world size), the process group, and the gathers.

Two CPU processes (gloo) == one process on the full batch: loss and parameter gradients. What must match: after DDP's gradient averaging (or all_reduce_gradients), every parameter's gradient on
every rank equals the gradient of the full-batch loss L computed by one process; the loss each rank
returns is L (local_loss=False) or a share whose mean over ranks is L (local_loss=True).
"""

import math
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from gcl_eval.util import distributed
from gcl_eval.util.distributed import WorldInfo
from gcl_eval.util.errors import GclError
from trainers.gradcache import GradCache
from trainers.losses import GCLLoss

WORLD = 2
VOCAB = 40
SHARDS = {"even": [6, 6], "uneven": [7, 4]}  # rows per rank

# (name, loss kind, normalize_by, multi-field, local_loss, gradient cache, shards)
CASES = [
    ("ce", "ce", "n", False, False, False, "even"),
    ("ce_local", "ce", "n", False, True, False, "even"),
    ("ce_sum_w_local_uneven", "ce", "sum_w", False, True, False, "uneven"),
    ("sigmoid", "sigmoid", "n", False, False, False, "even"),
    ("sigmoid_local_uneven", "sigmoid", "n", False, True, False, "uneven"),
    ("multi_field", "ce", "n", True, False, False, "even"),
    ("multi_field_local", "ce", "n", True, True, False, "uneven"),
    ("gradcache_ce", "ce", "n", False, False, True, "even"),
    ("gradcache_multi_field_local", "ce", "n", True, True, True, "even"),
]


class Towers(nn.Module):
    """A tiny two-tower model. As in open_clip, forward runs every tower once and returns the logit
    scale (exp'ed) and bias, so DDP sees every parameter used inside forward; the bias exists only
    for the sigmoid loss (open_clip's init_logit_bias), so no parameter goes unused."""

    def __init__(self, bias: bool):
        super().__init__()
        self.tok = nn.EmbeddingBag(VOCAB, 16, mode="mean")
        self.text = nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 8))
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 24), nn.GELU(), nn.Linear(24, 8))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-5.0)) if bias else None

    def encode_text(self, tokens):
        return F.normalize(self.text(self.tok(tokens)), dim=-1)

    def encode_image(self, images):
        return F.normalize(self.image(images), dim=-1)

    def forward(self, queries, images, titles):
        # The title tower is used only by the multi-field cases, so it runs only when given.
        docs = self.encode_image(images) if titles is None else [self.encode_image(images), self.encode_text(titles)]
        return self.encode_text(queries), docs, self.logit_scale.exp(), self.logit_bias


def _model(kind):
    torch.manual_seed(0)
    return Towers(bias=kind == "sigmoid").double()


def _data(n):
    g = torch.Generator().manual_seed(1)
    return {
        "queries": torch.randint(0, VOCAB, (n, 5), generator=g),
        "images": torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64),
        "titles": torch.randint(0, VOCAB, (n, 4), generator=g),
        "weights": 1.0 / torch.randint(1, 101, (n,), generator=g).double(),
        "present": torch.rand(n, 2, generator=g) > 0.3,
    }


def _fix_masks(present):
    present = present.clone()
    present[:, 0] |= ~present[:, 1]  # every product keeps at least one field
    return present


def _loss_module(kind, normalize_by, multi, local):
    if multi:
        return GCLLoss(kind, normalize_by, doc_field_weights=[0.5, 0.5], renormalize_mean=True, local_loss=local)
    return GCLLoss(kind, normalize_by, local_loss=local)


def _loss_call(loss_mod, multi, batch):
    """The loss as a function of the embeddings, logit scale and bias (the rest from the batch)."""
    masks = _fix_masks(batch["present"]) if multi else None

    def fn(q, d, scale, bias):
        return loss_mod(q, d, batch["weights"], scale, bias, doc_field_masks=masks)

    return fn


def _step(model, forward_model, case, batch):
    """One forward + backward; returns the loss. forward_model is the DDP wrapper or the model."""
    _, kind, normalize_by, multi, local, cache, _ = case
    loss_fn = _loss_call(_loss_module(kind, normalize_by, multi, local), multi, batch)
    titles = batch["titles"] if multi else None
    if cache:  # the plain model (no DDP), local chunks of 4 rows, gradients all-reduced by hand
        if multi:
            docs = (batch["images"], titles)

            def enc_d(chunk):
                return [model.encode_image(chunk[0]), model.encode_text(chunk[1])]

        else:
            docs, enc_d = batch["images"], model.encode_image
        cache = GradCache(
            model.encode_text, enc_d, lambda q, d: loss_fn(q, d, model.logit_scale.exp(), model.logit_bias), 4
        )
        loss = cache.step(batch["queries"], docs)
        distributed.all_reduce_gradients(model.parameters())
        return loss
    loss = loss_fn(*forward_model(batch["queries"], batch["images"], titles))
    loss.backward()
    return loss.detach()


def _worker(rank, init_file, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        torch.set_num_threads(1)
        results = {}
        for case in CASES:
            sizes = SHARDS[case[-1]]
            full = _data(sum(sizes))
            start = sum(sizes[:rank])
            batch = {k: v[start : start + sizes[rank]] for k, v in full.items()}
            model = _model(case[1])
            forward_model = model if case[5] else nn.parallel.DistributedDataParallel(model)
            loss = _step(model, forward_model, case, batch)
            mean_loss = loss.clone()
            dist.all_reduce(mean_loss)
            results[case[0]] = {
                "loss": loss,
                "mean_loss": mean_loss / WORLD,
                "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, start_method="spawn")
    return [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_two_ranks_equal_one_process(case, two_rank_results):
    name, kind, normalize_by, multi, local, cache, shards = case
    batch = _data(sum(SHARDS[shards]))
    model = _model(kind)
    ref_loss = _step(model, model, (name, kind, normalize_by, multi, local, False, shards), batch)
    ref_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    for rank, results in enumerate(two_rank_results):
        got = results[name]
        torch.testing.assert_close(got["mean_loss"], ref_loss, rtol=1e-12, atol=1e-12)
        if not local:  # every rank computed the whole loss
            torch.testing.assert_close(got["loss"], ref_loss, rtol=1e-12, atol=1e-12)
        assert set(got["grads"]) == set(ref_grads)
        for n, g in ref_grads.items():
            assert g.abs().max() > 0
            torch.testing.assert_close(got["grads"][n], g, rtol=1e-10, atol=1e-12, msg=f"rank {rank} {n}")


def test_identity_without_process_group():
    t = torch.randn(3, 2, requires_grad=True)
    assert not distributed.is_distributed()
    assert distributed.all_gather_with_grad(t) is t
    assert distributed.all_gather_no_grad(t) is t
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.local_slice([3]) == slice(0, 3)


# ------------------------------------------------------------------------------------------ devices and the launch

TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def test_world_info_reads_torchrun_environment_before_a_group_exists(monkeypatch, no_torchrun):
    assert distributed.world_info() == WorldInfo(0, 0, 1) and distributed.is_main_process()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = distributed.world_info()
    assert info == WorldInfo(rank=3, local_rank=1, world_size=4) and not info.is_main
    assert not distributed.is_main_process()
    assert distributed.rank() == 0 and distributed.world_size() == 1  # the group's view: there is none
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(GclError, match="RANK='x' is not an integer"):
        distributed.world_info()


def test_resolve_device_names(monkeypatch, no_torchrun):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert distributed.resolve_device(None) == distributed.resolve_device("auto") == torch.device("cpu")
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    assert distributed.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for name, message in [("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                          ("mps", "MPS .* is not available"), ("meta", "unsupported device 'meta'"),
                          ("tpu7", "unknown device 'tpu7'"), ("", "unknown device")]:
        with pytest.raises(GclError, match=message) as info:
            distributed.resolve_device(name)
        assert "\n" not in str(info.value)

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert distributed.resolve_device("auto") == distributed.resolve_device("mps") == torch.device("mps")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.resolve_device(None) == torch.device("cuda", 0)  # CUDA first
    assert distributed.resolve_device("cuda") == torch.device("cuda", 0)
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(GclError, match="sees 2 CUDA GPU"):
        distributed.resolve_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # under torchrun each rank takes its own GPU
    assert distributed.resolve_device("cuda") == distributed.resolve_device("auto") == torch.device("cuda", 1)


def test_no_process_group_outside_torchrun(monkeypatch, no_torchrun):
    assert distributed.init_distributed("cpu") is False
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: nothing to start either
    assert distributed.init_distributed("cpu") is False
    with distributed.process_group("cpu"):
        assert not dist.is_initialized()
    distributed.barrier()  # a no-op
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    loss = torch.tensor(2.5)
    assert distributed.mean_over_ranks(loss) is loss
    assert distributed.initialized_cuda_devices() == [] or torch.cuda.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_worker(rank, port, out_dir):
    """What torchrun gives a process: the environment; init_distributed starts the group from it."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"})
    with distributed.process_group("cpu"):
        results = {
            "initialised": dist.is_initialized() and dist.get_backend() == "gloo",
            "again": distributed.init_distributed("cpu"),  # idempotent: the group exists
            "info": distributed.world_info(),
            "main": distributed.is_main_process(),
            "objects": distributed.gather_objects(rank * 10),
            "mean": distributed.mean_over_ranks(torch.tensor(float(rank))).item(),
            "rows": distributed.all_gather_no_grad(torch.full((rank + 1, 2), rank, dtype=torch.bool)).tolist(),
        }
        distributed.barrier()
    results["after"] = dist.is_initialized()
    torch.save(results, os.path.join(out_dir, f"launch{rank}.pt"))


def test_init_distributed_starts_the_group_from_the_torchrun_environment(tmp_path):
    mp.start_processes(_launch_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"launch{rank}.pt", weights_only=False)
        assert got["initialised"] and got["again"] is False and got["after"] is False
        assert got["info"] == WorldInfo(rank, rank, WORLD) and got["main"] == (rank == 0)
        assert got["objects"] == [0, 10] and got["mean"] == 0.5
        assert got["rows"] == [[False, False], [True, True], [True, True]]  # uneven shards, bool rows
