"""Export a fitted run as one self-contained folder that labels inputs with onnxruntime alone.

``mlhead export --run RUN --format onnx -o DIR`` writes:

* ``model.onnx``: encoder + head in fp32, from preprocessed inputs to ``logits`` and ``scores`` (N x C
  float32; ``scores`` = the rule's activation). Image runs take ``pixels`` (float32 N x 3 x H x W, resized,
  cropped, divided by 255 and normalised as ``preprocessing.json`` says); text runs take ``input_ids`` and
  ``attention_mask`` (int64 N x L). The embeddings are rounded to float16 inside the graph, as the cache
  stores them, so the head sees exactly what ``mlhead predict`` gives it.
* ``labels.json`` (class names, score-column order), ``rule.json`` (:meth:`DecisionRule.to_dict`:
  activation, threshold or per-class thresholds, top-k, name), ``preprocessing.json`` (image: the resize /
  center-crop steps with interpolation, then divide by 255 and mean/std; text: the tokenizer folder
  ``tokenizer/`` copied next to it, max length, padding), and ``README.md``, a model card (data, split
  sizes, backbone and weights sha256, loss, test metrics under the exported rule, date, mlhead version).

The folder is written to a temporary sibling and renamed onto DIR when complete. When onnxruntime is
installed, the export is checked: onnxruntime's scores on a sample input equal torch's (the difference is
written into the model card). ``docs/export.md`` labels an image with onnxruntime, numpy and Pillow only.
Needs the ``export`` extra: ``pip install 'mlhead[export]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import ConfigError, DependencyError, RunError, StorageError
from .fileio import atomic_write_json, atomic_write_text, read_json

FORMATS = ("onnx",)
#: ONNX opset of the exported graph
OPSET = 17


@dataclass
class ExportResult:
    """``path`` (the folder), ``files`` written, ``max_abs_diff`` of onnxruntime vs torch scores on the
    sample input (None without onnxruntime) and the ``rule`` name."""

    path: Path
    files: list[str]
    max_abs_diff: float | None
    rule: str


def require_onnx() -> None:
    """Raise :class:`DependencyError` naming ``pip install 'mlhead[export]'`` when onnx is missing."""
    if importlib.util.find_spec("onnx") is None:
        raise DependencyError("mlhead export needs onnx: pip install 'mlhead[export]' (onnx, onnxruntime)")


class ScoringModel(torch.nn.Module):
    """encoder -> float16-rounded embeddings -> head -> (logits, scores) as one traceable module.

    ``forward(pixels)`` for image encoders, ``forward(input_ids, attention_mask)`` for text encoders;
    returns float32 N x C logits and the ``activation``'s scores (softmax over classes, sigmoid, or the
    logits)."""

    def __init__(self, encoder, head: torch.nn.Module, activation: str):
        super().__init__()
        self.encoder, self.head, self.activation = encoder, head, activation
        self.model = encoder.model  # registered, so .eval()/.to() reach it

    def forward(self, *inputs):
        if self.encoder.modality == "text":
            emb = self.encoder.forward({"input_ids": inputs[0], "attention_mask": inputs[1]})
        else:
            emb = self.encoder.forward(inputs[0])
        logits = self.head(emb.to(torch.float16).float())
        if self.activation == "softmax":
            return logits, torch.softmax(logits, dim=1)
        return logits, torch.sigmoid(logits) if self.activation == "sigmoid" else logits


def export_run(run_dir, out_dir, fmt: str = "onnx", *, rule=None, weights=None, cache=None) -> ExportResult:
    """Export the run in ``run_dir`` into the folder ``out_dir`` (see module docstring).

    ``rule``: the :class:`~mlhead.rules.DecisionRule` written to rule.json (default: the one the run was
    last evaluated with); ``weights``/``cache``: as for :func:`mlhead.load`. Raises ConfigError (another
    format, ``out_dir`` exists and is not empty, a preprocessing step that cannot be described),
    DependencyError (onnx missing), RunError/CacheError/BackboneError as :func:`mlhead.load`,
    StorageError when the folder cannot be written."""
    from .predict import load

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} invalid; valid: {', '.join(FORMATS)}")
    require_onnx()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"-o {out} exists and is not an empty folder; choose another or remove it")
    clf = load(run_dir, rule=rule, weights=weights, cache=cache, device="cpu", precision="fp32")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        diff = _write_folder(clf, Path(run_dir), tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:
        raise StorageError(f"cannot write -o {out}: {e.strerror or e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(out, sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()), diff,
                        clf.rule.name)


def _write_folder(clf, run_dir: Path, folder: Path) -> float | None:
    enc = clf.encoder
    model = ScoringModel(enc, clf.head, clf.rule.activation).eval()
    sample, names = sample_inputs(enc)
    with torch.no_grad():
        axes = {n: {0: "batch", 1: "tokens"} if enc.modality == "text" else {0: "batch"} for n in names}
        torch.onnx.export(model, sample, str(folder / "model.onnx"), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["logits", "scores"],
                          dynamic_axes={**axes, "logits": {0: "batch"}, "scores": {0: "batch"}})
        want = model(*sample)[1].numpy()
    atomic_write_json(folder / "labels.json", clf.classes)
    atomic_write_json(folder / "rule.json", clf.rule.to_dict())
    atomic_write_json(folder / "preprocessing.json", preprocessing_doc(enc, folder))
    diff = _check(folder / "model.onnx", sample, names, want)
    atomic_write_text(folder / "README.md", model_card(clf, run_dir, diff))
    return diff


def sample_inputs(enc) -> tuple[tuple, list[str]]:
    """A sample input of the encoder (2 examples) for tracing, and the ONNX input names."""
    if enc.modality == "text":
        batch = enc.collate(["a short text", "another slightly longer text for the sample"])
        return (batch["input_ids"], batch["attention_mask"]), ["input_ids", "attention_mask"]
    size = enc.preprocessing.get("input_size") or [3, 224, 224]
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, *size, generator=g),), ["pixels"]


def _check(path: Path, sample: tuple, names: list[str], want: np.ndarray) -> float | None:
    """Max |onnxruntime - torch| of the scores on ``sample`` (None when onnxruntime is not installed)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["scores"], {n: t.numpy() for n, t in zip(names, sample)})[0]
    return float(np.abs(got - want).max())


def preprocessing_doc(enc, folder: Path) -> dict:
    """What turns a raw input into the model's inputs. Images: ``steps`` (``resize``: shorter side to
    ``size`` or exactly [h, w], PIL ``interpolation``; ``center_crop``: [h, w]), then ``divide`` by 255 and
    ``mean``/``std`` per RGB channel, layout N x 3 x H x W. Texts: the tokenizer saved to ``folder/tokenizer``
    (``tokenizer.json``), ``max_length``, padding to the longest text, truncation. Raises ConfigError for
    an image pipeline with other steps."""
    if enc.modality == "text":
        enc.tokenizer.save_pretrained(str(folder / "tokenizer"))
        pre = enc.preprocessing
        return {"modality": "text", "tokenizer": "tokenizer/tokenizer.json", "max_length": pre["max_length"],
                "padding": "longest", "truncation": True, "inputs": ["input_ids", "attention_mask"],
                "pooling": pre["pooling"], "normalize": pre["normalize"], "encoder": pre}
    if enc.uint8_transform is None:
        raise ConfigError(f"the image pipeline of {enc.name!r} cannot be described for export: {enc.transform}")
    steps = [_step(t) for t in enc.uint8_transform.transforms if type(t).__name__ != "PILToHWC"]
    mean, std = enc.mean_std
    return {"modality": "image", "input": "pixels", "layout": "N x 3 x H x W float32, RGB",
            "color": "8-bit RGB: 16-bit greyscale scaled by 1/257, alpha composited onto white (mlhead.encoders.pixels)",
            "steps": steps, "divide": 255, "mean": list(mean), "std": list(std), "encoder": enc.preprocessing}


def _step(t) -> dict:
    from torchvision import transforms as T

    if isinstance(t, T.Resize):
        size = t.size if isinstance(t.size, int) else list(t.size)
        return {"op": "resize", "size": size[0] if isinstance(size, list) and len(size) == 1 else size,
                "interpolation": t.interpolation.value, "max_size": t.max_size}
    if isinstance(t, T.CenterCrop):
        return {"op": "center_crop", "size": list(t.size)}
    raise ConfigError(f"preprocessing step {t!r} cannot be exported (only Resize and CenterCrop are described)")


def model_card(clf, run_dir: Path, diff: float | None) -> str:
    """The README.md of an exported folder (Markdown)."""
    cfg, spec = clf.config, clf.spec
    metrics = _test_metrics(run_dir, clf.rule)
    lines = [f"# {cfg.dataset or 'mlhead'} multilabel classifier ({cfg.loss}, {spec['backbone']})", "",
             f"Exported by mlhead {__version__} on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from run "
             f"`{run_dir}`.", "", "## Data", "",
             f"* dataset: {cfg.dataset}; {len(cfg.classes)} classes (`labels.json`)",
             f"* split sizes: train {cfg.n_train}, val {cfg.n_val}, test {_test_size(cfg)}",
             f"* cache: `{cfg.cache}` (fingerprint {cfg.cache_fingerprint[:12]})", "", "## Model", "",
             f"* backbone: {spec['backbone']} ({spec['modality']}, {spec['dim']}-d), weights sha256 "
             f"`{spec['weights_sha256'] or '(random init or hub)'}`",
             f"* head: hidden {cfg.hidden}, normalize {cfg.normalize}; loss {cfg.loss} {cfg.loss_options or ''}, "
             f"lr {cfg.lr:g}, seed {cfg.seed}, best epoch {cfg.best_epoch} of {cfg.epochs}",
             f"* decision rule (`rule.json`): **{clf.rule.name}**", "",
             f"## Test metrics under {clf.rule.name} (percent)", "", metrics, "", "## Files", "",
             "`model.onnx` (fp32; inputs " + ("`input_ids`, `attention_mask`" if spec["modality"] == "text"
                                               else "`pixels`") + "; outputs `logits`, `scores`), `labels.json`, "
             "`rule.json`, `preprocessing.json`" + (", `tokenizer/`" if spec["modality"] == "text" else "") + ".",
             "See mlhead's docs/export.md for a script that labels inputs with onnxruntime, numpy and Pillow.",
             "" if diff is None else
             f"\nExport check: max |onnxruntime - torch| of the scores on a sample = {diff:.2e}.",
             ""]
    return "\n".join(lines)


def _test_metrics(run_dir: Path, rule) -> str:
    path = run_dir / "eval" / f"test__{rule.slug}.json"
    if not path.is_file():
        return (f"not evaluated under this rule (`mlhead eval --run {run_dir} --split test` with the same rule "
                "writes them)")
    values = read_json(path, RunError, f"; rerun `mlhead eval --run {run_dir}`").get("metrics") or {}
    keys = [k for k in ("weighted_f1", "micro_f1", "macro_f1", "macro_precision", "map") if k in values]
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
                      "| " + " | ".join(f"{values[k]:.2f}" for k in keys) + " |"])


def _test_size(cfg) -> str:
    from .cache import open_cache
    from .errors import CacheError

    try:
        c = open_cache(cfg.cache)
    except CacheError:
        return "?"
    return str(c.shapes["test"][0]) if "test" in c.shapes else "-"
