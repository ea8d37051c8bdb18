"""timm image encoders (``timm:NAME``, bare timm names, timm folders): pooled features, timm's eval transform.

The model is built with ``num_classes=0`` (global-pooled features, ``model.num_features`` wide) and its
preprocessing is timm's own data config (``resolve_model_data_config``), so the embeddings are what timm
gives. Weights: ``--weights`` (a timm state_dict as safetensors/.pth, or a folder with it and a
``config.json`` whose ``architecture``, ``model_kwargs`` and ``pretrained_cfg`` (mean/std...) apply), a
timm folder given as the name, else timm's hub download (offline: an error that says how to pass them).
Presets: ``mobilenetv2_100`` and ``tresnet_m`` (paper 4.2).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackboneError
from .base import ImageEncoder
from .factory import register_family, register_preset
from .weights import (WeightsLocation, hub_access, load_state, read_json, resolve_weights, sha256_of, weights_error,
                      weights_file)

#: the timm data-config keys stored in ``preprocessing`` (and fed back as ``pretrained_cfg`` by from_spec)
DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
HOW = ("Pass --weights PATH: a safetensors/.pth timm state_dict, or a folder with model.safetensors + "
       "config.json (timm 'model_kwargs' and 'pretrained_cfg' with mean/std), e.g. "
       "../shared/weights/mobilenetv2_100; or --random-init for a smoke test")


@register_family("timm")
class TimmEncoder(ImageEncoder):
    """A timm model's pooled features (``num_classes=0``). Options: ``model_kwargs`` (timm
    ``create_model`` kwargs, e.g. ``{"pad_type": "same"}``), ``data_config`` (overrides of timm's
    pretrained_cfg: input_size, mean, std, interpolation, crop_pct, crop_mode)."""

    family = "timm"
    kind = "timm"
    options = ("model_kwargs", "data_config")

    @classmethod
    def create(cls, model_id, weights=None, *, name=None, default=None, random_init=False,
               model_kwargs=None, data_config=None) -> "TimmEncoder":
        """See :meth:`Encoder.create`. ``name`` is ignored: a timm encoder is named by its architecture
        (the folder config's ``architecture`` when it has one). Raises :class:`BackboneError` for an
        unknown architecture, weights that are unreadable or do not fit, or no weights offline."""
        from timm.data import create_transform, resolve_model_data_config

        loc = resolve_weights(model_id, weights, default, hub=not random_init)
        cfg = loc.config
        arch = cfg.get("architecture", _own_arch(model_id))
        kwargs = {**cfg.get("model_kwargs", {}), **(model_kwargs or {})}
        overlay = {**cfg.get("pretrained_cfg", {}), **(data_config or {})} or None
        model, wfile = _build(arch, loc, kwargs, overlay)
        data_cfg = resolve_model_data_config(model)
        pre = {"kind": "timm", "arch": arch, "model_kwargs": kwargs, "random_init": loc.kind == "hub" and not loc.hub_id,
               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()}}
        return cls(arch, model, model.num_features, pre, sha256_of(wfile),
                   transform=create_transform(**data_cfg, is_training=False))

    @classmethod
    def claims(cls, folder) -> bool:
        """A folder with a ``config.json`` that is not a transformers one (no ``model_type``)."""
        cfg = Path(folder) / "config.json"
        return cfg.is_file() and "model_type" not in read_json(cfg)

    @classmethod
    def request(cls, spec: dict) -> tuple[str, dict]:
        """``timm:ARCH`` with the stored model_kwargs, random_init and data config (so a bare weights file
        rebuilds the same preprocessing as the folder the cache was made with)."""
        pre = spec["preprocessing"]
        return f"timm:{pre['arch']}", {"model_kwargs": pre.get("model_kwargs") or None,
                                       "random_init": bool(pre.get("random_init")),
                                       "data_config": {k: pre[k] for k in DATA_KEYS if k in pre}}


def _own_arch(model_id: str | Path) -> str:
    """The architecture a model id names: a folder's ``config.json`` ``architecture`` (else the folder's
    name), or the id itself."""
    if not isinstance(model_id, Path):
        return model_id
    cfg = model_id / "config.json"
    return (read_json(cfg) if cfg.is_file() else {}).get("architecture", model_id.name)


def _build(arch: str, loc: WeightsLocation, kwargs: dict, overlay: dict | None):
    """(timm model with pooled output, weights file or None) for the resolved weights ``loc``."""
    import timm

    wfile = weights_file(loc.path) if loc.path is not None else None
    offline = ""
    try:
        if loc.kind == "hub" and loc.hub_id:
            with hub_access() as offline:
                model = timm.create_model(arch, pretrained=True, num_classes=0, **kwargs)
        else:
            model = timm.create_model(arch, pretrained=False, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            from .factory import PRESETS

            raise BackboneError(f"unknown backbone {arch!r}: not a registered preset ({', '.join(PRESETS.names())}), "
                                "a local model folder, or a timm model name (timm:NAME)") from None
        raise
    except Exception as e:  # hub unreachable / no cached weights
        raise weights_error(repr(arch), loc, "; ".join(x for x in (offline, type(e).__name__) if x), HOW) from None
    if wfile is not None:
        _load_into(model, wfile, arch, kwargs)
    return model, wfile


def _load_into(model, wfile: Path, arch: str, kwargs: dict) -> None:
    """Load the state_dict in ``wfile`` (its classifier dropped) strictly into ``model``."""
    state = load_state(wfile)
    head = model.pretrained_cfg.get("classifier", "classifier")
    state = {k: v for k, v in state.items() if not k.startswith(f"{head}.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise BackboneError(f"--weights {wfile} do not fit timm {arch!r} {kwargs or ''}: "
                            f"{str(e).splitlines()[-1].strip()[:200]}") from None
    if missing or unexpected:
        raise BackboneError(f"--weights {wfile} do not fit timm {arch!r} {kwargs or ''}: "
                            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")


register_preset("mobilenetv2_100", "timm:mobilenetv2_100",
                doc="MobileNetV2 1.0 (paper 4.2, moviePosters), 1280-d; the staged TF weights' config.json "
                    "sets pad_type='same' and mean/std 0.5")
register_preset("tresnet_m", "timm:tresnet_m.miil_in21k",
                doc="TResNet-M ImageNet-21k (paper 4.2, Pascal-VOC), 2048-d")
