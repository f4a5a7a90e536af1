"""Learned field fusion: the module's math, the fused loss term, training (fusion.pt, resume, field
dropout), evaluation (fused exact search == the explicit formula, the run record, the cache) and bad input."""

from __future__ import annotations

import copy
import json
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gcl_eval.data.dataset import Documents, ImageStore, make_documents
from gcl_eval.data.io import read_dataset
from gcl_eval.retrieval.dense import DenseRetriever
from gcl_eval.retrieval.embedding_cache import EmbeddingCache
from gcl_eval.retrieval.fields import FieldWeights
from gcl_eval.retrieval.fusion import FUSION_FILE, FieldFusion, fuse_document_matrices, fuse_query_matrix
from gcl_eval.util.errors import GclError
from trainers import checkpoint as ckpt
from trainers.config import TrainConfig
from trainers.data import EpochBatches, FieldDropout, make_loader, streaming_loader, training_pairs
from trainers.losses import GCLLoss, multi_field_loss, weighted_contrastive_loss
from trainers.towers import build_towers
from train_helpers import assert_same_tensors, make_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIELDS = ("image", "title")
HALF = FieldWeights.of(image=0.5, title=0.5)


def _unit(*shape, seed=0, dtype=torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=-1)


def _perturbed(fusion: FieldFusion, seed=1) -> FieldFusion:
    """The fusion with every parameter moved off its init (a trained-looking fusion)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in fusion.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return fusion


def _explicit_scores(fusion: FieldFusion, q, fields, present) -> torch.Tensor:
    """score(q_i, d_j) = sum_m a_m(q_i) s_m(p_j) (q_i . d_j^m), field by field (absent fields skipped)."""
    a = torch.softmax(fusion.global_logits + q @ fusion.query_proj.T.to(q.dtype), dim=-1)
    bits = 2 ** torch.arange(len(fields))
    pattern = (present.long() * bits).sum(dim=1)
    scores = torch.zeros(q.shape[0], fields[0].shape[0], dtype=q.dtype)
    for m, d in enumerate(fields):
        for j in range(d.shape[0]):
            if present[j, m]:
                s = fusion.presence_bias[pattern[j], m].exp()
                scores[:, j] += a[:, m] * s * (q @ d[j])
    return scores


# ------------------------------------------------------------------------------------------ the module


def test_concatenated_inner_product_is_the_explicit_weighted_sum():
    fusion = _perturbed(FieldFusion(FIELDS, 8, [0.5, 0.5]).double())
    q, d1, d2 = _unit(5, 8, seed=0), _unit(6, 8, seed=1), _unit(6, 8, seed=2)
    present = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1], [0, 1], [1, 0]], dtype=torch.bool)
    q_fused, d_fused = fusion(q, [d1, d2], present)
    assert q_fused.shape == (5, 16) and d_fused.shape == (6, 16)
    with torch.no_grad():
        torch.testing.assert_close(q_fused @ d_fused.T, _explicit_scores(fusion, q, [d1, d2], present))


def test_at_init_equal_weights_score_the_mean_and_a_title_only_document_its_title():
    fusion = FieldFusion(FIELDS, 8, [0.5, 0.5]).double()
    q, image, title = _unit(4, 8, seed=3), _unit(3, 8, seed=4), _unit(3, 8, seed=5)
    image[1] = float("nan")  # document 1 has no image: its row is garbage and must never be read
    present = torch.tensor([[True, True], [False, True], [True, False]])
    with torch.no_grad():
        q_fused, d_fused = fusion(q, [image, title], present)
        scores = q_fused @ d_fused.T
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores[:, 0], 0.5 * (q @ image[0] + q @ title[0]))
    torch.testing.assert_close(scores[:, 1], q @ title[1])  # title only: the renormalised mean, its title
    torch.testing.assert_close(scores[:, 2], q @ image[2])
    assert fusion.global_weights() == {"image": 0.5, "title": 0.5}


def test_absent_fields_contribute_exactly_zero_even_when_nan():
    fusion = _perturbed(FieldFusion(FIELDS, 4))
    d = [_unit(2, 4, seed=6, dtype=torch.float32), _unit(2, 4, seed=7, dtype=torch.float32)]
    d[0][0] = float("nan")
    present = torch.tensor([[False, True], [True, True]])
    with torch.no_grad():
        fused = fusion.fuse_documents(d, present)
    assert torch.isfinite(fused).all() and torch.equal(fused[0, :4], torch.zeros(4))


def test_save_and_load_give_identical_outputs(tmp_path):
    fusion = _perturbed(FieldFusion(FIELDS, 8, [0.3, 0.7]))
    fusion.save(tmp_path / FUSION_FILE)
    loaded = FieldFusion.load(tmp_path / FUSION_FILE)
    assert loaded.fields == FIELDS and loaded.dim == 8 and not loaded.training
    assert loaded.fingerprint() == fusion.fingerprint()
    q, d = _unit(3, 8, dtype=torch.float32), [_unit(3, 8, seed=s, dtype=torch.float32) for s in (1, 2)]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(fusion(q, d), loaded(q, d)))
    (tmp_path / "bad.pt").write_bytes(b"not a fusion")
    with pytest.raises(GclError, match="not a readable field fusion"):
        FieldFusion.load(tmp_path / "bad.pt")


# ------------------------------------------------------------------------------------------ the loss


def test_the_fused_term_replaces_the_pooled_term():
    n, dim = 6, 8
    q = _unit(n, dim, seed=10)
    image, title = _unit(n, dim, seed=11), _unit(n, dim, seed=12)
    masks = torch.tensor([[1, 1], [0, 1], [1, 1], [1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    w = torch.linspace(0.2, 1.0, n, dtype=torch.float64)
    scale = torch.tensor(7.0, dtype=torch.float64)
    fusion = _perturbed(FieldFusion(FIELDS, dim, [0.5, 0.5]).double())
    got = multi_field_loss([q], [image, title], w, scale, [1.0], [0.5, 0.5], doc_field_masks=masks, fusion=fusion)

    q_fused, d_fused = fusion(q, [image, title], masks)
    expected = weighted_contrastive_loss(q_fused, d_fused, w, scale)
    for m, d in enumerate((image, title)):  # the per-field terms, over the rows that have the field
        rows = masks[:, m].nonzero().squeeze(1)
        expected = expected + weighted_contrastive_loss(q[rows], d[rows], w[rows], scale)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fusion.parameters())
    assert fusion.query_proj.grad.abs().sum() > 0  # the query-conditioned part learns from the first step

    fixed = multi_field_loss([q], [image, title], w, scale, [1.0], [0.5, 0.5], doc_field_masks=masks)
    via_module = GCLLoss("ce", query_field_weights=[1.0], doc_field_weights=[0.5, 0.5])(
        [q], [image, title], w, scale, doc_field_masks=masks)
    assert torch.equal(fixed, via_module) and not torch.allclose(fixed, got)


def test_fixed_fusion_changes_no_recipe_and_adds_no_parameter():
    fixed = TrainConfig(arch="tiny-clip")
    assert "fusion" not in fixed.recipe() and "field_dropout" not in fixed.recipe()  # cache keys as before
    learned = TrainConfig(arch="tiny-clip", fusion="learned", field_dropout=0.1)
    assert learned.recipe()["fusion"] == "learned" and learned.recipe()["field_dropout"] == 0.1
    towers, _ = build_towers(fixed, "cpu")
    assert towers.fusion is None and all(k.startswith("model.") for k in towers.state_dict())


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("fusion") / "data", queries=10, docs_per_query=10)


def fusion_config(**kw) -> TrainConfig:
    base = dict(arch="tiny-clip", epochs=1, max_steps=3, batch_size=8, num_workers=0, device="cpu", warmup=1,
                fusion="learned", field_dropout=0.3, checkpoint_every=1, doc_fields=HALF)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from trainers.loop import train

    out = tmp_path_factory.mktemp("fusion") / "run"
    train(fusion_config(), tiny_data, out)
    return out


def test_a_learned_fusion_trains_and_is_exported_beside_a_plain_model(trained):
    start = build_towers(fusion_config(), "cpu")[0].fusion
    fusion = FieldFusion.load(trained / FUSION_FILE)
    moved = [k for k, v in fusion.state_dict().items() if not torch.equal(v, start.state_dict()[k])]
    assert sorted(moved) == ["global_logits", "presence_bias", "query_proj"]
    assert not any(k.startswith("fusion") for k in torch.load(trained / "model.pt", weights_only=True))
    state = ckpt.read_checkpoint(trained)
    assert_same_tensors({k.removeprefix("fusion."): v for k, v in state["model"].items() if k.startswith("fusion.")},
                        fusion.state_dict())  # checkpoint.pt holds the fusion too (resume)
    loaded = ckpt.load_trained(trained)
    assert loaded.fusion.fingerprint() == fusion.fingerprint()
    info = json.loads((trained / "train.json").read_text())
    assert info["fusion_file"] == FUSION_FILE and info["config"]["fusion"] == "learned"


def test_an_open_clip_export_carries_the_fusion(trained, tmp_path):
    from gcl_eval.experiments.export import export_checkpoint

    exported = export_checkpoint(trained, "open_clip", tmp_path / "exported")
    assert FUSION_FILE in exported.files and "fusion.pt" in (tmp_path / "exported" / "README.md").read_text()
    assert (FieldFusion.load(tmp_path / "exported" / FUSION_FILE).fingerprint()
            == FieldFusion.load(trained / FUSION_FILE).fingerprint())


def test_resume_is_bit_identical(tiny_data, trained, tmp_path, monkeypatch):
    from trainers.loop import train
    from trainers.step import Stepper

    step, taken = Stepper.__call__, [0]

    def stop_after_two(self, *args, **kwargs):
        if taken[0] == 2:
            raise KeyboardInterrupt  # as a user's Ctrl-C: the checkpoint of step 2 is on disk
        taken[0] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Stepper, "__call__", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(fusion_config(), tiny_data, tmp_path / "again")
    monkeypatch.setattr(Stepper, "__call__", step)
    assert ckpt.read_checkpoint(tmp_path / "again")["position"]["step"] == 2
    assert train(fusion_config(), tiny_data, tmp_path / "again", resume=True).resumed_from_step == 2
    assert_same_tensors(ckpt.read_checkpoint(trained)["model"], ckpt.read_checkpoint(tmp_path / "again")["model"])
    assert (trained / FUSION_FILE).read_bytes() == (tmp_path / "again" / FUSION_FILE).read_bytes()


def _first_step_gradients(config: TrainConfig, data) -> dict:
    from trainers.optim import make_optimizer
    from trainers.step import Stepper

    towers, _ = build_towers(config, "cpu")
    towers.double()
    pairs = training_pairs(read_dataset(data), config)
    sampler = EpochBatches(len(pairs), config.batch_size, config.seed)
    sampler.set_position(0)
    q, d, w, m = next(iter(make_loader(pairs, towers, config, sampler)))
    d["image"] = d["image"].double()
    Stepper(towers, config, make_optimizer(towers, config), None)(q, d, w.double(), m)
    return {n: p.grad.clone() for n, p in towers.named_parameters() if p.grad is not None}


def test_the_gradient_cache_trains_the_fusion_as_the_plain_step_does(tiny_data):
    plain = _first_step_gradients(fusion_config(), tiny_data)
    cached = _first_step_gradients(fusion_config(grad_cache_chunk=3), tiny_data)
    assert sorted(cached) == sorted(plain) and {"fusion.global_logits", "fusion.query_proj"} <= set(plain)
    for name, g in plain.items():
        torch.testing.assert_close(cached[name], g, rtol=0, atol=1e-10 * max(1.0, g.abs().max().item()), msg=name)


def test_field_dropout_is_drawn_from_seed_epoch_and_record():
    masks = torch.tensor([[True, True]] * 6 + [[True, False]] * 2)  # (image, title); the last two: image only
    rows = np.arange(8)
    dropout = FieldDropout(0.5, seed=3, n=1000, doc_fields=FIELDS)
    first = dropout.apply(masks, 0, rows)
    assert torch.equal(FieldDropout(0.5, seed=3, n=1000, doc_fields=FIELDS).apply(masks, 0, rows), first)
    assert torch.equal(first[:, 1], masks[:, 1]) and first[6:, 0].all()  # titles kept; a last field never hidden
    assert torch.equal(dropout.apply(masks[[5, 2]], 0, [5, 2]), first[[5, 2]])  # per record, not per batch
    hidden = ~dropout.apply(torch.ones(1000, 2, dtype=torch.bool), 1, np.arange(1000))[:, 0]
    assert 400 < int(hidden.sum()) < 600 and torch.equal(hidden, torch.from_numpy(dropout.drawn(1)))
    assert not np.array_equal(dropout.drawn(0), dropout.drawn(1))  # each epoch draws anew


def test_both_loaders_hide_the_same_images(tiny_data):
    config = fusion_config(field_dropout=0.5)
    towers, _ = build_towers(config, "cpu")
    pairs = training_pairs(read_dataset(tiny_data), config)
    sampler = EpochBatches(len(pairs), 8, seed=0)
    sampler.set_position(1)
    fast = [m for *_, m in make_loader(pairs, towers, config, sampler)]
    slow = [m for *_, m in streaming_loader(pairs, towers, config, sampler)]
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
    hidden = sum(int((~m[:, towers.doc_fields.index("image")]).sum()) for m in fast)
    assert hidden > 0


# ------------------------------------------------------------------------------------------ evaluation


class HashedFields:
    """A numpy encoder: each text and image reference gets a seeded random unit vector; absent fields NaN."""

    batch_size, num_workers = 4, 0

    def fingerprint(self) -> str:
        return "hashed-fields/v1"

    def _vectors(self, keys) -> np.ndarray:
        rows = np.stack([np.random.default_rng(zlib.crc32(str(k).encode())).standard_normal(6) for k in keys])
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    def encode_queries(self, texts):
        return self._vectors(texts)

    def encode_field(self, documents, field):
        values = documents.titles() if field == "title" else documents.image_refs()
        present = np.array([v is not None for v in values])
        out = self._vectors([f"{field}:{v}" for v in values])
        out[~present] = np.nan
        return out, present


def _synthetic_docs(folder) -> Documents:
    folder.mkdir(parents=True, exist_ok=True)
    titles, images = [], []
    for i in range(23):
        (folder / f"{i}.png").write_bytes(bytes([i]))
        titles.append(None if i % 5 == 1 else f"title {i}")
        images.append(None if i % 3 == 2 and i % 5 != 1 else str(folder / f"{i}.png"))
    return Documents(make_documents([f"d{i:02d}" for i in range(23)], titles, images), ImageStore())


def test_fused_search_equals_brute_force_and_hits_the_cache(tmp_path):
    docs, encoder = _synthetic_docs(tmp_path / "images"), HashedFields()
    fusion = _perturbed(FieldFusion(FIELDS, 6, [0.5, 0.5])).eval()
    queries = [f"query {i}" for i in range(7)]
    retriever = DenseRetriever(encoder, doc_weights=HALF, cache=EmbeddingCache(tmp_path / "cache"), fusion=fusion)
    ids, scores = retriever.search("zero_shot", queries, "corpus_2", docs, k=10)
    assert retriever.describe()["doc_fields"] == "learned(image,title)"
    assert retriever.describe()["fusion"]["global_weights"] == fusion.global_weights()

    fields = [torch.from_numpy(encoder.encode_field(docs, name)[0]).double() for name in FIELDS]
    present = torch.from_numpy(np.stack([encoder.encode_field(docs, name)[1] for name in FIELDS], axis=1))
    with torch.no_grad():
        expected = _explicit_scores(copy.deepcopy(fusion).double(),
                                    torch.from_numpy(encoder.encode_queries(queries)).double(), fields,
                                    present).float().numpy()
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, axis=1), atol=1e-5)
    np.testing.assert_allclose(scores, -np.sort(-expected, axis=1)[:, :10], atol=1e-5)  # the true top 10

    again = DenseRetriever(encoder, doc_weights=HALF, cache=EmbeddingCache(tmp_path / "cache"), fusion=fusion)
    ids_again, scores_again = again.search("in_domain", queries, "corpus_2", docs, k=10)
    assert again.cache.stats.as_dict()["hits"] >= 2  # the fused corpus and the queries
    assert np.array_equal(ids, ids_again) and np.array_equal(scores, scores_again)

    matrices = {name: encoder.encode_field(docs, name)[0] for name in FIELDS}
    masks = {name: encoder.encode_field(docs, name)[1] for name in FIELDS}
    fused = fuse_document_matrices(fusion, matrices, masks)
    assert fused.dtype == np.float32 and np.isfinite(fused).all()
    assert fuse_query_matrix(fusion, encoder.encode_queries(queries)).shape == (7, 12)
    with pytest.raises(GclError, match="every split the same way"):
        DenseRetriever(encoder, doc_weights=HALF, split_doc_weights={"zero_shot": FieldWeights.of(title=1.0)},
                       fusion=fusion)


def test_a_trained_fusion_is_evaluated_and_recorded(trained, tiny_data, gcl, tmp_path):
    args = ["eval", "--arch", "tiny-clip", "--checkpoint", trained, "--data", tiny_data, "--queries", "10",
            "--top-k", "20", "--workers", "0", "--device", "cpu"]
    first = gcl(*args, "--out", tmp_path / "run")
    assert first.code == 0, first.err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    model = result["model"]
    fusion = FieldFusion.load(trained / FUSION_FILE)
    assert model["doc_fields"] == "learned(image,title)" and model["split_doc_fields"] == {}
    assert model["fusion"] == {"kind": "learned", "fields": ["image", "title"],
                               "global_weights": fusion.global_weights(), "sha256": fusion.fingerprint()}
    second = gcl(*args, "--out", tmp_path / "again")  # every embedding from the cache: the same numbers
    assert second.code == 0, second.err
    again = json.loads((tmp_path / "again" / "result.json").read_text())
    assert again["timings"]["embedding_cache"]["misses"] == 0
    metrics = {split: body["metrics"] for split, body in result["splits"].items()}
    assert {split: body["metrics"] for split, body in again["splits"].items()} == metrics


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("options, needle", [
    (dict(fusion="learned", doc_fields=FieldWeights.of(title=1.0)), "at least two document fields"),
    (dict(fusion="mixed"), "unknown field fusion"),
    (dict(field_dropout=1.0), r"probability in \[0, 1\)"),
    (dict(field_dropout=-0.1), r"probability in \[0, 1\)"),
    (dict(field_dropout=0.2, doc_fields=FieldWeights.of(title=1.0)), "needs image and another"),
])
def test_bad_fusion_options_are_one_line_errors(options, needle):
    with pytest.raises(GclError, match=needle):
        TrainConfig(arch="tiny-clip", **options)


@pytest.mark.parametrize("args, needle", [
    (["--fusion", "learned", "--fields", "title=1"], "at least two document fields"),
    (["--field-dropout", "1.5"], "field dropout must be a probability"),
])
def test_bad_fusion_options_exit_2_from_the_cli(gcl, tmp_path, args, needle):
    result = gcl("train", "--arch", "tiny-clip", "--data", tmp_path / "nowhere", "--out", tmp_path / "out", *args)
    assert result.code == 2 and len(result.error_lines) == 1 and needle in result.err


def test_the_fusion_learns_at_its_own_rate_and_the_rest_at_lr():
    from trainers.config import TrainConfig
    from trainers.optim import CosineSchedule, make_optimizer

    config = TrainConfig(arch="tiny-clip", fusion="learned", fusion_lr=5e-3, lr=1e-4, warmup=2)
    model = torch.nn.Module()
    model.encoder = torch.nn.Linear(4, 4)
    model.fusion = FieldFusion(("image", "title"), 4, [0.5, 0.5])
    optimizer = make_optimizer(model, config)
    CosineSchedule(config.lr, config.warmup, 10).apply(optimizer, 1)
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(model.encoder.weight)] == pytest.approx(1e-4)
    assert rates[id(model.fusion.query_proj)] == pytest.approx(5e-3)
    with pytest.raises(GclError, match="fusion_lr applies to a learned field fusion"):
        TrainConfig(arch="tiny-clip", fusion_lr=1e-3)
