"""The :class:`Encoder` interface every family implements, and the image pipeline the image families share.

An encoder turns dataset rows into embeddings in three steps, so that stage one (``mlhead.embed``) needs
no knowledge of modalities or families:

    item  = encoder.read(row_input)       # one row: decode + resize an image file, check a text  (worker)
    batch = encoder.collate(items)        # stack uint8 images / tokenize texts                   (worker)
    emb   = encoder.encode(batch)         # N x D float32 tensor, on the encoder's device         (main)

Rows whose forward cost differs (texts: token counts) can instead be read a window at a time, once:

    block = encoder.read_block(row_inputs)   # a RowBlock: every row read (texts: tokenized) once
    block.sizes, block.errors                # per-row cost (to batch rows of similar size), bad rows
    batch = block.batch(rows)                # the rows' batch, equal to collate([read(x) ...])

``read``, ``collate`` and ``read_block`` are small picklable objects (they never hold the model), so they
run in DataLoader worker processes under any start method. ``fingerprint()`` is what makes a cache stale when it
changes; ``spec()`` is what :func:`mlhead.encoders.from_spec` needs to rebuild the very same encoder (a
cache's attrs are a spec).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from .pixels import to_rgb8


class BadInput(ValueError):
    """A row the encoder cannot read (empty text...); its message is reported as is, with the row."""


def read_one(read: Callable[[Any], Any], value) -> tuple[Any, str | None]:
    """``(read(value), None)``, or ``(None, message)`` for a row ``read`` cannot read: a :class:`BadInput`'s
    own message (e.g. ``"empty text"``), else ``"ExceptionType: message"`` (a corrupt, truncated or missing
    file). Never raises for an ``Exception``: the caller reports the row (``--on-error``)."""
    try:
        return read(value), None
    except BadInput as e:
        return None, str(e)
    except Exception as e:  # any unreadable input is reported with its row, not raised here
        return None, f"{type(e).__name__}: {e}"


class RowBlock(ABC):
    """Rows read together, once (:attr:`Encoder.read_block`): ``sizes`` (int64 numpy array, one cost per
    row, e.g. its token count; 0 for a bad row), ``errors`` (row index -> message, as :func:`read_one`
    gives) and :meth:`batch`. Picklable (it travels from a DataLoader worker to the main process)."""

    sizes: np.ndarray
    errors: dict[int, str]

    def __len__(self) -> int:
        return len(self.sizes)

    @abstractmethod
    def batch(self, rows: list[int]) -> Any:
        """The collated batch of ``rows`` (indices into the block, none of them in :attr:`errors`), in
        that order: equal to ``encoder.collate([encoder.read(x) for x in those rows' inputs])``."""


class Encoder(ABC):
    """A frozen encoder (backbone) in eval mode with its preprocessing.

    Attributes: ``name`` (the cache's ``backbone`` attr and file name), ``dim`` (embedding width D),
    ``model`` (the ``torch.nn.Module``), ``preprocessing`` (JSON-able dict: ``kind`` = family's
    preprocessing kind, and every setting that shapes the embeddings), ``weights_sha256`` (of the weights
    file or folder; ``""`` for hub or random weights), ``read`` / ``collate`` (picklable, see module doc).
    Class attributes: ``family`` (registry name = source prefix), ``kind``, ``modality``
    (``"image"``/``"text"``), ``options`` (keyword options :meth:`create` takes besides ``random_init``),
    ``cpu_workers`` (default DataLoader workers on CPU), ``threaded_read`` (decode a batch with a thread
    pool when reading in the main process). ``read_block`` (None, or a picklable ``inputs -> RowBlock``):
    rows that differ in cost are read a window at a time, once, and ``embed`` batches them by
    ``RowBlock.sizes``; None: rows are read one by one with ``read`` and all cost the same (images).
    """

    family: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    cpu_workers: ClassVar[int] = 0
    threaded_read: ClassVar[bool] = False

    def __init__(self, name: str, model: torch.nn.Module, dim: int, preprocessing: dict, weights_sha256: str,
                 read: Callable[[Any], Any], collate: Callable[[list], Any],
                 read_block: Callable[[list], RowBlock] | None = None):
        self.name, self.model, self.dim = name, model.eval().requires_grad_(False), int(dim)
        self.preprocessing, self.weights_sha256 = preprocessing, weights_sha256
        self.read, self.collate, self.read_block = read, collate, read_block

    # ------------------------------------------------------------------ what a family implements

    @classmethod
    @abstractmethod
    def create(cls, model_id: str, weights=None, *, name: str | None = None,
               default: Callable | None = None, random_init: bool = False, **options) -> "Encoder":
        """Build the encoder for ``model_id`` (a family-specific id: timm arch, HF id or folder...).

        ``weights``: ``--weights PATH`` or None; ``default``: the preset's default weights location
        (see :func:`mlhead.encoders.weights.resolve_weights`); ``name``: the display/cache name (else
        derived from ``model_id``); ``random_init``: random weights (tests, benchmarks). Raises
        :class:`BackboneError` (weights missing or not fitting) or :class:`DependencyError`."""

    @classmethod
    @abstractmethod
    def claims(cls, folder) -> bool:
        """True when the local ``folder`` holds a model of this family (its config files say so)."""

    @classmethod
    @abstractmethod
    def request(cls, spec: dict) -> tuple[str, dict]:
        """``(source, options)`` such that ``create_encoder(source, weights, **options)`` rebuilds the
        encoder ``spec`` describes (``spec["preprocessing"]["kind"] == cls.kind``)."""

    @abstractmethod
    def encode(self, batch) -> torch.Tensor:
        """Embeddings N x D (float32) of a collated ``batch`` already on the model's device."""

    # ------------------------------------------------------------------------------ shared

    def to(self, device: torch.device) -> "Encoder":
        """Move the model to ``device``; returns self."""
        self.model.to(device)
        return self

    def fingerprint(self) -> dict:
        """The fields that shape the cache (any change makes it stale): ``backbone`` (name),
        ``weights_sha256``, ``preprocessing`` (family kind, pooling, max_length, sizes, mean/std...)."""
        return {"backbone": self.name, "weights_sha256": self.weights_sha256, "preprocessing": self.preprocessing}

    def spec(self) -> dict:
        """What :func:`mlhead.encoders.from_spec` needs to rebuild this encoder exactly: the fingerprint
        plus ``modality`` and ``dim``. A cache's attrs hold all of these (``dim`` as the embeddings' width)."""
        return {**self.fingerprint(), "modality": self.modality, "dim": self.dim}

    def describe(self, value) -> str:
        """How an error message names a row's input (images: the path; texts: ``"text"``)."""
        return str(value)

    def default_workers(self, device: torch.device) -> int:
        """DataLoader worker processes when ``--workers`` is not given: on CUDA up to 2 (decoding overlaps
        the GPU's forward pass), on CPU :attr:`cpu_workers` (see :func:`mlhead.embed.embed`)."""
        import os

        return min(2, os.cpu_count() or 1) if device.type == "cuda" else self.cpu_workers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, sha256={self.weights_sha256[:12]!r})"


# ---------------------------------------------------------------------------------- image pipeline


class PILToHWC:
    """PIL image -> uint8 tensor H x W x C (the bytes PILToTensor gives, in their native HWC order)."""

    def __call__(self, img) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))

    def __repr__(self) -> str:
        return "PILToHWC()"


class ImageReader:
    """Picklable ``read``: an image file path (or an open PIL image) -> ``transform(RGB image)`` (uint8
    H x W x C after :func:`split_uint8`). Every PIL mode is turned into 8-bit RGB by
    :func:`mlhead.encoders.pixels.to_rgb8` (16-bit scaled, alpha composited onto white). Raises whatever PIL
    raises for a missing, truncated or corrupt file."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, path) -> torch.Tensor:
        from PIL import Image

        if isinstance(path, Image.Image):  # mlhead.load(...).predict([pil_image])
            return self.transform(to_rgb8(path))
        with Image.open(path) as img:
            img.load()
            return self.transform(to_rgb8(img))


def stack(items: list[torch.Tensor]) -> torch.Tensor:
    """Picklable ``collate`` of images: ``torch.stack`` (uint8 N x H x W x C, or float N x C x H x W)."""
    return torch.stack(items)


def split_uint8(transform) -> tuple[Callable | None, tuple | None]:
    """Split an eval Compose ``[..geometric.., (Maybe)ToTensor, Normalize]`` (timm's, open_clip's) into the
    geometric part + :class:`PILToHWC` (uint8) and the Normalize ``(mean, std)``; ``(None, None)`` for any
    other layout."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-1], T.Normalize) or \
            type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None, None
    norm = steps[-1]
    mean, std = (tuple(float(v) for v in torch.as_tensor(x).flatten()) for x in (norm.mean, norm.std))
    return T.Compose(steps[:-2] + [PILToHWC()]), (mean, std)


class ImageEncoder(Encoder):
    """An image encoder: files are decoded and resized to uint8 H x W x C in the workers (4x less
    worker->main traffic than float, and HWC is already the channels_last layout the CNN runs in), then
    scaled and normalised here by :meth:`prepare`. ``transform`` is the family's own float pipeline
    (PIL -> float C x H x W), kept as the reference and for layouts :func:`split_uint8` cannot split."""

    modality = "image"
    threaded_read = True
    cpu_workers = 0

    def __init__(self, name: str, model: torch.nn.Module, dim: int, preprocessing: dict, weights_sha256: str,
                 transform: Callable):
        self.transform = transform
        self.uint8_transform, self.mean_std = split_uint8(transform)
        super().__init__(name, model, dim, preprocessing, weights_sha256,
                         read=ImageReader(self.uint8_transform or transform), collate=stack)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x C -> float32 N x C x H x W in channels_last memory: /255, then (x - mean) / std,
        as ToTensor + Normalize would per image, with bit-identical values. The N x C x H x W view of the
        HWC batch is already channels_last, so no layout copy is made; the fp32 ops run in place on one
        buffer. A float batch (from ``transform``) passes through."""
        if self.mean_std is None or batch.is_floating_point():
            return batch
        mean, std = (torch.tensor(v, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
                     for v in self.mean_std)
        x = batch.permute(0, 3, 1, 2).float()  # preserve_format: stays channels_last
        return x.div_(255).sub_(mean).div_(std)

    def to(self, device: torch.device) -> "ImageEncoder":
        """Move the model to ``device``, channels_last (except on MPS)."""
        self.model.to(device)
        if device.type != "mps":
            self.model.to(memory_format=torch.channels_last)
        return self

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Embeddings N x D float32 of uint8 N x H x W x C (or float N x C x H x W) images."""
        x = self.prepare(batch).contiguous(memory_format=torch.channels_last)
        return self.forward(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of normalised images (float N x C x H x W); the family overrides it when its
        model's ``forward`` is not that."""
        return self.model(x)
