"""Training data: the in_domain pairs as multi-field records, in a deterministic, resumable order.

Each record is (query text; document title and image; weight w = STW(score)). The order of an epoch is a
permutation drawn from (seed, epoch) alone, cut into full batches (drop_last: every step sees the whole
contrastive batch), so the data position (epoch, batch index) says exactly which batches a run has done
and a resumed run skips precisely those. Under torchrun each global batch is cut into one contiguous
shard per rank, in rank order, so the all-gathered batch is the single-process batch.

Images are decoded and preprocessed in DataLoader workers with the model's eval transform by default: a
random crop could cut away the frame colour that carries the synthetic images' quality cue.
``augment`` selects the training transform; its randomness is then seeded per (seed, epoch, record), so
the crops do not depend on worker count or on where a run was resumed. A missing title or image becomes
a field mask (False); a record none of whose weighted document fields is present is an input error.
Field dropout (``field_dropout``) hides some documents' images by their masks, drawn from (seed, epoch,
record) alone (:class:`FieldDropout`), so that it too is the same whatever the workers and resumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset

from gcl_eval.data.dataset import Dataset, ImageStore, _missing
from gcl_eval.util.errors import DataError, GclError
from trainers.config import TrainConfig
from trainers.weights import score_to_weight

TRAIN_SPLIT = "in_domain"


@dataclass
class TrainingPairs:
    """Parallel arrays, one row per in_domain pair. title/image are None where missing."""

    queries: list[str]
    titles: list[str | None]
    images: list[str | None]  # image references for ``image_store``
    weights: np.ndarray  # float32, STW of the scores
    doc_ids: list[str]
    image_store: ImageStore

    def __len__(self) -> int:
        return len(self.queries)


def training_pairs(dataset: Dataset, config: TrainConfig, *, source: str = "") -> TrainingPairs:
    """The in_domain pairs of ``dataset`` with their weights; every input error is one GclError line."""
    where = f" of {source}" if source else ""
    if TRAIN_SPLIT not in dataset.pairs:
        raise DataError(f"dataset{where} has no {TRAIN_SPLIT} split to train on (splits: {', '.join(dataset.splits)})")
    pairs = dataset.pairs[TRAIN_SPLIT]
    if len(pairs) == 0:
        raise DataError(f"the {TRAIN_SPLIT} split{where} has no pairs")
    try:
        weights = score_to_weight(config.stw, pairs["score"].to_numpy(dtype=np.float64), s_max=config.s_max,
                                  **dict(config.stw_params))
    except GclError as err:
        raise DataError(f"{TRAIN_SPLIT} pairs{where}: {err}") from None
    docs = dataset.corpus_for(TRAIN_SPLIT)
    doc_ids = pairs["doc_id"].astype(str).tolist()
    table = docs.table.reindex(doc_ids)
    titles = [None if _missing(t) else str(t) for t in table["title"].tolist()]
    images = [None if _missing(r) else str(r) for r in table["image"].tolist()]
    queries = pairs["query"].astype(str).tolist()
    active = config.doc_fields.active()
    present = np.zeros(len(doc_ids), dtype=bool)
    if "title" in active:
        present |= np.array([t is not None for t in titles], dtype=bool)
    if "image" in active:
        present |= np.array([r is not None for r in images], dtype=bool)
    if not present.all():
        i = int(np.flatnonzero(~present)[0])
        raise DataError(f"{TRAIN_SPLIT} pair {i}{where}: document {doc_ids[i]!r} has none of the trained "
                        f"fields {', '.join(active)}")
    return TrainingPairs(queries, titles, images, weights.astype(np.float32), doc_ids, docs.images)


class EpochBatches:
    """Batch sampler: the batches of one epoch from a start batch, as this rank's shard.

    Yields lists of (epoch, record index); ``set_position(epoch, start)`` before each epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1):
        if batch_size > n:
            raise DataError(f"batch size {batch_size} is larger than the {n} {TRAIN_SPLIT} training pairs")
        if batch_size % world_size:
            raise GclError(f"batch size {batch_size} does not split evenly over {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start, self.stop = 0, 0, self.batches_per_epoch

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """This epoch's permutation of the records, from (seed, epoch) only."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def set_position(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        """Yield batches start..stop-1 of ``epoch`` next (stop: the epoch's end, or where max_steps ends it)."""
        stop = self.batches_per_epoch if stop is None else stop
        if not 0 <= start <= stop <= self.batches_per_epoch:
            raise GclError(f"batches {start}..{stop} are outside epoch {epoch} ({self.batches_per_epoch} batches)")
        self.epoch, self.start, self.stop = epoch, start, stop

    def global_batch(self, epoch: int, b: int) -> np.ndarray:
        return self.order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        order = self.order(self.epoch)
        shard = self.batch_size // self.world_size
        for b in range(self.start, self.stop):
            rows = order[b * self.batch_size + self.rank * shard:b * self.batch_size + (self.rank + 1) * shard]
            yield [(self.epoch, int(i)) for i in rows]


class FieldDropout:
    """Hides training documents' images: in epoch e, record i's image is hidden (its mask set False) with
    probability p, drawn for all records at once from (seed, e), so neither the batch, the rank, the
    worker nor a resume changes the draw; a document whose image is its only present field keeps it."""

    STREAM = 1  # a seed word that keeps these draws apart from the epoch order's (EpochBatches.order)

    def __init__(self, p: float, seed: int, n: int, doc_fields):
        self.p, self.seed, self.n = float(p), seed, n
        self.image = tuple(doc_fields).index("image")
        self._epoch, self._drawn = None, None

    def drawn(self, epoch: int) -> np.ndarray:
        """(n,) bool: the records whose image epoch ``epoch`` hides where it may."""
        if self._epoch != epoch:
            self._drawn = np.random.default_rng([self.seed, epoch, self.STREAM]).random(self.n) < self.p
            self._epoch = epoch
        return self._drawn

    def apply(self, masks: torch.Tensor, epoch: int, rows) -> torch.Tensor:
        """The (B, M) field masks of records ``rows`` of ``epoch`` with the drawn images hidden."""
        hide = torch.from_numpy(self.drawn(epoch)[np.asarray(rows, dtype=np.int64)]) & (masks.sum(dim=1) > 1)
        out = masks.clone()
        out[:, self.image] &= ~hide
        return out


def field_dropout(config: TrainConfig, n: int, doc_fields) -> FieldDropout | None:
    """The run's field dropout over its ``n`` records, or None when it hides nothing."""
    return FieldDropout(config.field_dropout, config.seed, n, doc_fields) if config.field_dropout > 0 else None


class RecordDataset(TorchDataset):
    """Record i of an epoch: query, title, preprocessed image (decoded here, i.e. in a worker), weight."""

    def __init__(self, pairs: TrainingPairs, towers, doc_fields, *, augment: bool, seed: int):
        self.pairs = pairs
        self.preprocess = towers.preprocess_image if "image" in doc_fields else None
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key):
        epoch, i = key
        image = None
        ref = self.pairs.images[i]
        if self.preprocess is not None and ref is not None:
            try:
                pil = self.pairs.image_store.load(ref)
            except Exception as err:  # a missing or corrupt file: name it
                raise DataError(f"image {ref!r} of document {self.pairs.doc_ids[i]!r} does not load: "
                                f"{' '.join(str(err).split())[:200]}") from None
            if self.augment:
                sample_seed = int(np.random.SeedSequence([self.seed, epoch, i]).generate_state(1)[0])
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(sample_seed)
                    image = self.preprocess(pil, train=True)
            else:
                image = self.preprocess(pil)
        return {"query": self.pairs.queries[i], "title": self.pairs.titles[i], "image": image,
                "weight": float(self.pairs.weights[i]), "key": (epoch, i)}


class Collate:
    """A list of records -> (query batch, doc batch, weights, doc field masks or None).

    Texts are tokenised here (in the workers too). A missing title is tokenised as "" and a missing image
    is zeros, with its mask False: the loss never reads a masked field's embedding. ``dropout``: a
    FieldDropout applied to the masks.
    """

    def __init__(self, towers, doc_fields, dropout: FieldDropout | None = None):
        self.tokenize = towers.tokenize
        self.doc_fields = tuple(doc_fields)
        self.image_shape = towers.image_shape
        self.multi = towers.multi_field
        self.dropout = dropout

    def __call__(self, records):
        query = {"query": self.tokenize([r["query"] for r in records], "query")}
        doc, masks = {}, []
        for name in self.doc_fields:
            if name == "title":
                doc["title"] = self.tokenize([r["title"] or "" for r in records], "document")
                masks.append(torch.tensor([r["title"] is not None for r in records]))
            else:
                images = [r["image"] if r["image"] is not None else torch.zeros(self.image_shape) for r in records]
                doc["image"] = torch.stack(images)
                masks.append(torch.tensor([r["image"] is not None for r in records]))
        weights = torch.tensor([r["weight"] for r in records], dtype=torch.float32)
        doc_masks = torch.stack(masks, dim=1) if self.multi else None  # always given: ranks must agree
        if self.dropout is not None and doc_masks is not None:
            doc_masks = self.dropout.apply(doc_masks, records[0]["key"][0], [r["key"][1] for r in records])
        return query, doc, weights, doc_masks


PREPARED_MAX_BYTES = 1 << 30  # decoded images kept in memory by the prepared path (tiny-clip: 12 KB each)


class _UniqueImages(TorchDataset):
    """(index, preprocessed image or None, error line or None): errors are returned, not raised, so that a
    bad file reaches the user as one line and not as a worker's traceback."""

    def __init__(self, pairs: TrainingPairs, refs: list[str], owners: list[str], preprocess):
        self.pairs, self.refs, self.owners, self.preprocess = pairs, refs, owners, preprocess

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, j: int):
        try:
            return j, self.preprocess(self.pairs.image_store.load(self.refs[j])), None
        except Exception as err:  # a missing or corrupt file: name it
            return j, None, (f"image {self.refs[j]!r} of document {self.owners[j]!r} does not load: "
                             f"{' '.join(str(err).split())[:200]}")


class PreparedBatches:
    """The fast path for open_clip towers without augmentation: every distinct image decoded and
    preprocessed once and every distinct text tokenised once, up front; a batch is then a few index
    lookups in this process, with no worker competing with torch for the cores.

    Batches are equal to the DataLoader path's (the eval transform and open_clip's fixed-length tokens
    are deterministic per value; test). Iterates ``sampler`` like a DataLoader with that batch sampler.
    """

    def __init__(self, pairs: TrainingPairs, towers, sampler: EpochBatches, workers: int,
                 dropout: FieldDropout | None = None):
        self.sampler = sampler
        self.dropout = dropout
        self.weights = torch.from_numpy(np.asarray(pairs.weights, dtype=np.float32))
        self.doc_fields = tuple(towers.doc_fields)
        self.multi = towers.multi_field
        self.query_tokens, self.query_index = _tokenize_unique(pairs.queries, towers, "query")
        self.fields = {}
        for name in self.doc_fields:
            if name == "title":
                titles = [t if t is not None else "" for t in pairs.titles]
                tokens, index = _tokenize_unique(titles, towers, "document")
                present = torch.tensor([t is not None for t in pairs.titles])
            else:
                tokens, index, present = _decode_unique(pairs, towers, workers)
            self.fields[name] = (tokens, index, present)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            rows = torch.tensor([i for _, i in batch], dtype=torch.long)
            query = {"query": self.query_tokens[self.query_index[rows]]}
            doc, masks = {}, []
            for name in self.doc_fields:
                values, index, present = self.fields[name]
                doc[name] = values[index[rows]]
                masks.append(present[rows])
            doc_masks = torch.stack(masks, dim=1) if self.multi else None
            if self.dropout is not None and doc_masks is not None:
                doc_masks = self.dropout.apply(doc_masks, batch[0][0], rows.numpy())
            yield query, doc, self.weights[rows], doc_masks


def _tokenize_unique(texts: list[str], towers, role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens of each distinct text, index of each record's text into them)."""
    distinct, index = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    parts = [towers.tokenize(list(distinct[i:i + 4096]), role) for i in range(0, len(distinct), 4096)]
    return torch.cat(parts), torch.from_numpy(index.reshape(-1).astype(np.int64))


def _as_list(items):
    return items


def _decode_unique(pairs: TrainingPairs, towers, workers: int):
    """(preprocessed distinct images, index per record, present per record); a missing image is zeros."""
    refs = [r if r is not None else "" for r in pairs.images]
    distinct, first, index = np.unique(np.asarray(refs, dtype=object), return_index=True, return_inverse=True)
    owners = [pairs.doc_ids[i] for i in first]
    images = torch.zeros((len(distinct), *towers.image_shape))
    todo = [j for j, ref in enumerate(distinct) if ref != ""]
    items = _UniqueImages(pairs, [distinct[j] for j in todo], [owners[j] for j in todo], towers.preprocess_image)
    loader = DataLoader(items, batch_size=256, num_workers=workers, collate_fn=_as_list,
                        generator=torch.Generator().manual_seed(0))  # never draw from the global RNG
    from gcl_eval.util.console import track

    for chunk in track(loader, "decoding training images", total=len(loader)):
        for j, image, error in chunk:
            if error is not None:
                raise DataError(error)
            images[todo[j]] = image
    present = torch.tensor([r is not None for r in pairs.images])
    return images, torch.from_numpy(index.reshape(-1).astype(np.int64)), present


def use_prepared(pairs: TrainingPairs, towers, config: TrainConfig) -> bool:
    """The prepared path applies to open_clip towers with deterministic preprocessing whose distinct
    images fit in PREPARED_MAX_BYTES."""
    if config.augment or towers.image_shape is None:
        return False
    if "image" not in towers.doc_fields:
        return True
    distinct = len(set(r for r in pairs.images if r is not None))
    return distinct * int(np.prod(towers.image_shape)) * 4 <= PREPARED_MAX_BYTES


def make_loader(pairs: TrainingPairs, towers, config: TrainConfig, sampler: EpochBatches):
    """Batches of ``sampler``: the prepared in-process path where it applies (``use_prepared``), else a
    DataLoader with its own generator, so it never draws from the global RNG (which dropout uses:
    drawing from it would make a resumed run differ)."""
    if use_prepared(pairs, towers, config):
        return PreparedBatches(pairs, towers, sampler, config.data_workers(),
                               field_dropout(config, len(pairs), towers.doc_fields))
    return streaming_loader(pairs, towers, config, sampler)


def streaming_loader(pairs: TrainingPairs, towers, config: TrainConfig, sampler: EpochBatches) -> DataLoader:
    """Records decoded and tokenised in DataLoader workers, batch by batch."""
    dataset = RecordDataset(pairs, towers, towers.doc_fields, augment=config.augment, seed=config.seed)
    workers = config.data_workers()
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collate(towers, towers.doc_fields, field_dropout(config, len(pairs), towers.doc_fields)),
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(config.seed),
        pin_memory=False,
    )


def move_to(batch, device):
    """Tensors of a nested dict/list/tuple batch onto ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to(v, device) for v in batch)
    return batch
