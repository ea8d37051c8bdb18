"""open_clip image towers (``open_clip:ARCH`` or ``open_clip:FOLDER``), an optional extra.

This module is the whole family: adding one is this one file (subclass an Encoder, register it).

``pip install 'mlhead[open_clip]'`` installs ``open_clip_torch``; without it, building one raises
:class:`DependencyError` saying so. Only the image tower (``model.visual``: pooled, projected features,
``embed_dim`` wide) is kept; the text tower is dropped. Preprocessing is open_clip's eval transform (resize,
center crop, mean/std from the model's ``preprocess_cfg``), split into uint8 decoding in the workers and
normalisation here like every image encoder. Sources, in the resolver's order: ``--weights`` (an open_clip
checkpoint file, or a folder with ``open_clip_config.json`` and ``open_clip_model.safetensors``), the
folder named by ``open_clip:FOLDER``, else the ``pretrained=TAG`` download of open_clip (needs network).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import BackboneError, DependencyError
from .base import ImageEncoder
from .factory import register_family
from .weights import (WEIGHT_FILES, WeightsLocation, hub_access, resolve_weights, sha256_of, weights_error,
                      weights_file)

CONFIG = "open_clip_config.json"
CHECKPOINTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") + WEIGHT_FILES
HOW = ("Pass --weights PATH: an open_clip checkpoint (.safetensors/.bin) for the architecture, or a folder "
       f"with {CONFIG} + open_clip_model.safetensors; or the option pretrained=TAG with network access")


def _open_clip():
    try:
        import open_clip
    except ImportError:
        raise DependencyError("open_clip encoders need the optional extra: pip install 'mlhead[open_clip]' "
                              "(open_clip_torch>=2.20)") from None
    return open_clip


@register_family("open_clip")
class OpenCLIPImageEncoder(ImageEncoder):
    """The image tower of an open_clip model. Options: ``pretrained`` (an open_clip tag, downloaded),
    ``normalize`` (L2-normalise the embeddings, as CLIP does before its cosine similarities)."""

    family = "open_clip"
    kind = "open_clip"
    options = ("pretrained", "normalize")

    def __init__(self, name, model, dim, preprocessing, weights_sha256, transform):
        self.normalize = bool(preprocessing["normalize"])
        super().__init__(name, model, dim, preprocessing, weights_sha256, transform)

    @classmethod
    def create(cls, model_id, weights=None, *, name=None, default=None, random_init=False,
               pretrained=None, normalize=False) -> "OpenCLIPImageEncoder":
        """See :meth:`Encoder.create`. ``model_id``: a built-in open_clip architecture (``ViT-B-32``) or a
        folder holding ``open_clip_config.json``. Raises :class:`DependencyError` without open_clip,
        :class:`BackboneError` for an unknown architecture, weights that do not fit, or none offline."""
        open_clip = _open_clip()
        loc = resolve_weights(model_id, weights, default, hub=not random_init and bool(pretrained))
        folder = _config_folder(model_id, loc)
        arch = f"local-dir:{folder}" if folder else str(model_id)
        wfile = None if random_init or loc.path is None else _checkpoint(loc.path)
        if not random_init and wfile is None and loc.hub_id is None:
            raise weights_error(f"open_clip {arch!r}", loc, "no checkpoint and no pretrained=TAG", HOW)
        hub = loc.kind == "hub" and loc.hub_id is not None
        offline = ""
        try:
            with hub_access() if hub else contextlib.nullcontext("") as offline:
                clip, _, transform = open_clip.create_model_and_transforms(
                    arch, pretrained=pretrained if hub else None, load_weights=hub)
        except Exception as e:  # unknown arch, unreadable config, download impossible
            why = "; ".join(x for x in (offline, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") if x)
            raise BackboneError(f"cannot build open_clip {arch!r} ({why}); tried: {'; '.join(loc.tried)}. {HOW}") from None
        if wfile is not None:
            _load_into(open_clip, clip, wfile, arch)
        model_cfg = open_clip.get_model_config(str(model_id)) if not folder else \
            _read_config(folder).get("model_cfg", {})
        pre = {"kind": "open_clip", "arch": str(folder or model_id), "model_cfg": model_cfg,
               "pretrained": (pretrained or "") if hub else "", "normalize": bool(normalize),
               "random_init": bool(random_init),
               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in clip.visual.preprocess_cfg.items()}}
        display = name or (folder.name if folder else str(model_id))
        return cls(display, clip.visual, clip.visual.output_dim, pre, sha256_of(wfile), transform)

    @classmethod
    def claims(cls, folder) -> bool:
        """A folder holding ``open_clip_config.json``."""
        return (Path(folder) / CONFIG).is_file()

    @classmethod
    def request(cls, spec: dict) -> tuple[str, dict]:
        """``open_clip:ARCH_OR_FOLDER`` with the stored tag, normalisation and random init."""
        pre = spec["preprocessing"]
        return f"open_clip:{pre['arch']}", {"pretrained": pre.get("pretrained") or None,
                                            "normalize": pre["normalize"], "random_init": pre["random_init"]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The image tower's projected features, L2-normalised when ``normalize``."""
        emb = self.model(x)
        return F.normalize(emb.float(), dim=-1) if self.normalize else emb


def _config_folder(model_id, loc: WeightsLocation) -> Path | None:
    """The folder whose ``open_clip_config.json`` defines the architecture: the model id's, else the
    ``--weights`` folder's; None for a built-in architecture."""
    for p in (model_id if isinstance(model_id, Path) else None, loc.path):
        if p is not None and p.is_dir() and (p / CONFIG).is_file():
            return p
    return None


def _checkpoint(path: Path) -> Path:
    """The checkpoint file of a file or folder (open_clip's file names first)."""
    found = [path / n for n in CHECKPOINTS if path.is_dir() and (path / n).is_file()]
    return found[0] if found else weights_file(path)


def _read_config(folder: Path) -> dict:
    from .weights import read_json

    return read_json(folder / CONFIG)


def _load_into(open_clip, clip, wfile: Path, arch: str) -> None:
    """Load the checkpoint ``wfile`` strictly; :class:`BackboneError` naming it when it does not fit."""
    try:
        open_clip.load_checkpoint(clip, str(wfile))
    except Exception as e:  # unreadable, missing/unexpected keys, shape mismatch
        raise BackboneError(f"--weights {wfile} do not fit open_clip {arch!r} ({type(e).__name__}: "
                            f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})") from None
