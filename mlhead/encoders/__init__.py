"""Encoders (backbones): one module per family behind one :class:`Encoder` interface.

    enc = create_encoder("mobilenetv2_100", weights="../shared/weights/mobilenetv2_100")
    batch = enc.collate([enc.read(path) for path in paths])   # picklable: runs in DataLoader workers
    emb = enc.encode(batch)                                   # N x D float32
    enc.fingerprint()                                         # backbone, weights_sha256, preprocessing
    same = from_spec(enc.spec(), weights=...)                 # predict/export rebuild it from cache attrs

Families: ``timm`` (images), ``hf`` (transformers texts), ``open_clip`` (images; optional extra). Adding a
family is one new module in this package: subclass :class:`Encoder` (or :class:`ImageEncoder`) and decorate
it with :func:`register_family`; every module of the package is imported here, so it registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import BadInput, Encoder, ImageEncoder
from .factory import (DEFAULT_FAMILY, ENCODERS, PRESETS, RANDOM_INIT_SEED, Preset, create_encoder, from_spec,
                      list_encoders, register_family, register_preset)
from .weights import WeightsLocation, resolve_weights, sha256_of

for _module in pkgutil.iter_modules(__path__):  # sorted by name: registration order is fixed
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["BadInput", "DEFAULT_FAMILY", "ENCODERS", "Encoder", "ImageEncoder", "PRESETS", "Preset",
           "RANDOM_INIT_SEED", "WeightsLocation", "create_encoder", "from_spec", "list_encoders",
           "register_family", "register_preset", "resolve_weights", "sha256_of"]
