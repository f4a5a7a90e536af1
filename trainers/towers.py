"""The model as the training loop sees it: query and document towers over batches of fields.

A Towers module wraps an open_clip model (text tower for the query and title fields, image tower for
the image field) or a :class:`trainers.text_model.TextEncoder` (one shared tower for query and title).
It owns what is model-specific in training: tokenising, image preprocessing, autocast, the logit scale
(and bias, for the sigmoid loss), and which weights the exported ``model.pt`` holds.

``encode_query(batch)`` / ``encode_doc(batch)`` return one normalised (N, D) tensor when the side has one
field, else a list (one per field, in ``doc_fields`` order): the structure :class:`trainers.losses.GCLLoss`
takes for single- and multi-field training. ``forward(query_batch, doc_batch)`` runs both towers and
returns the exp'ed logit scale and the bias too, so that a DistributedDataParallel wrapper sees every
trained parameter used inside one forward.

With ``fusion = "learned"`` the towers own a :class:`gcl_eval.retrieval.fusion.FieldFusion` (``fusion``;
None otherwise): its parameters are trained with the model's and saved in checkpoint.pt, the loss applies
it to the (gathered) field embeddings, and the finished run exports it as fusion.pt beside model.pt.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from gcl_eval.util.errors import GclError
from trainers.config import TrainConfig

MAX_LOGIT_SCALE = math.log(100.0)  # open_clip clamps the (log) scale at log(100) after every step
AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Towers(nn.Module):
    """Base: field bookkeeping and autocast; subclasses encode."""

    def __init__(self, config: TrainConfig, device: torch.device):
        super().__init__()
        self.query_fields = tuple(config.query_fields.active())
        self.doc_fields = tuple(config.doc_fields.active())
        self.multi_field = len(self.query_fields) > 1 or len(self.doc_fields) > 1
        self.amp_dtype = AMP_DTYPES[config.precision]
        self.device_type = torch.device(device).type
        self.fusion = None

    def _attach_fusion(self, config: TrainConfig, dim: int) -> None:
        """A learned field fusion over the document fields, starting from the recipe's field weights."""
        if config.fusion != "learned":
            return
        from gcl_eval.retrieval.fusion import FieldFusion

        weights = config.doc_fields.as_dict()
        self.fusion = FieldFusion(self.doc_fields, dim, [weights[f] for f in self.doc_fields])

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def _side(self, embeddings: list[torch.Tensor]):
        return embeddings if self.multi_field else embeddings[0]

    def logit_params(self):
        """(t, b): the logit scale as the multiplier (exp of the parameter) and the bias or None."""
        return self.logit_scale_param.exp(), self.logit_bias_param

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale_param.clamp_(0, MAX_LOGIT_SCALE)

    def forward(self, query_batch, doc_batch):
        scale, bias = self.logit_params()
        return self.encode_query(query_batch), self.encode_doc(doc_batch), scale, bias

    # subclasses: encode_query, encode_doc, tokenize(texts, role), preprocess_image(pil, train),
    # image_shape, logit_scale_param, logit_bias_param, export_state_dict()


class OpenClipTowers(Towers):
    """An open_clip model: text tower for query/title, image tower for image.

    For the sigmoid loss a CLIP architecture gets a logit bias parameter (b = -10, SigLIP's init); from
    random init its scale starts at SigLIP's t = 10 too, a pretrained scale is kept. The added bias is a
    training-only parameter: the exported model.pt leaves it out so that plain open_clip loads the file.
    An image tower that no field uses gets no gradient: it is frozen (and kept out of the optimizer).
    """

    def __init__(self, loaded, config: TrainConfig, device):
        super().__init__(config, device)
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.preprocess_val = loaded.preprocess_val
        self.preprocess_train = loaded.preprocess_train
        self.uses_bias = config.loss == "sigmoid"
        self.added_bias = False
        if self.uses_bias and getattr(self.model, "logit_bias", None) is None:
            self.model.logit_bias = nn.Parameter(torch.tensor(-10.0, device=self.model.logit_scale.device))
            if config.pretrained is None:
                with torch.no_grad():
                    self.model.logit_scale.fill_(math.log(10.0))
            self.added_bias = True
        if not self.uses_bias and getattr(self.model, "logit_bias", None) is not None:
            self.model.logit_bias.requires_grad_(False)  # a SigLIP model trained with the CE loss
        if "image" not in self.doc_fields:
            self.model.visual.requires_grad_(False)
        from gcl_eval.retrieval.models import text_pad_id

        self.pad_id = text_pad_id(self.model)  # a Hugging Face text tower: batches are cut to their longest text
        size = self.model.visual.image_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.image_shape = (3, *size)
        self._attach_fusion(config, _embed_dim(self.model, config.arch))

    @property
    def logit_scale_param(self):
        return self.model.logit_scale

    @property
    def logit_bias_param(self):
        return self.model.logit_bias if self.uses_bias else None

    def tokenize(self, texts, role: str) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def preprocess_image(self, image, train: bool = False) -> torch.Tensor:
        return (self.preprocess_train if train else self.preprocess_val)(image)

    def _text(self, tokens):
        from gcl_eval.retrieval.models import trim_padding

        with self.autocast():
            return self.model.encode_text(trim_padding(tokens, self.pad_id), normalize=True)

    def _image(self, images):
        with self.autocast():
            return self.model.encode_image(images, normalize=True)

    def encode_query(self, batch):
        return self._side([self._text(batch["query"])])

    def encode_doc(self, batch):
        return self._side([self._image(batch[f]) if f == "image" else self._text(batch[f]) for f in self.doc_fields])

    def export_state_dict(self) -> dict:
        """The open_clip model's own state dict, as plain open_clip builds and loads it."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        if self.added_bias:
            state.pop("logit_bias")
        return state


class TextTowers(Towers):
    """A TextEncoder: one tower for query and title, E5 role prefixes."""

    def __init__(self, encoder, config: TrainConfig, device):
        super().__init__(config, device)
        self.encoder = encoder
        self.image_shape = None

    @property
    def logit_scale_param(self):
        return self.encoder.logit_scale

    @property
    def logit_bias_param(self):
        return self.encoder.logit_bias

    def tokenize(self, texts, role: str) -> dict[str, torch.Tensor]:
        return self.encoder.tokenize(texts, role)

    def preprocess_image(self, image, train: bool = False):
        raise GclError("a text model has no image tower")

    def _text(self, features):
        with self.autocast():
            return self.encoder(features)

    def encode_query(self, batch):
        return self._side([self._text(batch["query"])])

    def encode_doc(self, batch):
        return self._side([self._text(batch[f]) for f in self.doc_fields])

    def export_state_dict(self) -> dict:
        return {k: v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}


def _embed_dim(model, arch: str) -> int:
    """The dimension of an open_clip model's embeddings (its image tower's output, else its config's)."""
    dim = getattr(model.visual, "output_dim", None)
    if isinstance(dim, int):
        return dim
    from gcl_eval.retrieval.models import open_clip_module

    return int((open_clip_module().get_model_config(arch) or {})["embed_dim"])


def build_towers(config: TrainConfig, device) -> tuple[Towers, dict]:
    """The model to train, seeded from ``config.seed``, on ``device``; plus what identifies its start.

    Returns (towers, info) where info records the model source and a hash of the initial weights.
    """
    device = torch.device(device)
    if config.arch is not None:
        from gcl_eval.retrieval.models import load_open_clip

        loaded = load_open_clip(config.arch, config.pretrained, seed=config.seed, device=str(device))
        towers = OpenClipTowers(loaded, config, device)
        info = {"kind": "open_clip", "arch": config.arch, "source": loaded.source,
                "init_sha256": loaded.weights_sha256}
        return towers.to(device), info
    from trainers.text_model import load_text_model

    if config.pretrained is not None:
        raise GclError("--pretrained applies to open_clip architectures; give a text model's folder as --text-model")
    encoder = load_text_model(config.text_model, prefixes=config.text_prefixes, max_length=config.max_length,
                              sigmoid=config.loss == "sigmoid", device=device)
    towers = TextTowers(encoder, config, device)
    info = {"kind": "text", "text_model": config.text_model, "source": encoder.source}
    return towers.to(device), info

