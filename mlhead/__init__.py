"""mlhead: multilabel classification heads on frozen pretrained encoders.

Stage one (``mlhead embed``) runs a frozen backbone once and caches embeddings in HDF5; stage two
(``mlhead fit``) trains only the head on the cached tensors with any multilabel loss; ``mlhead eval``
applies an explicit decision rule and reports the sigmoidF1 paper's Table-2 metrics and more;
``mlhead.load(run_dir)`` returns a :class:`~mlhead.predict.Classifier` that labels new inputs.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``mlhead.load`` (:func:`mlhead.predict.load`), imported on first use so ``import mlhead`` stays light."""
    if name == "load":
        from .predict import load

        return load
    raise AttributeError(f"module 'mlhead' has no attribute {name!r}")


__all__ = ["__version__", "load"]
