"""mlhead: multilabel classification heads on frozen pretrained encoders.

Stage one (``mlhead embed``) runs a frozen backbone once and caches embeddings in HDF5; stage two
(``mlhead fit``) trains only the head on the cached tensors with any multilabel loss; ``mlhead eval``
applies an explicit decision rule and reports the sigmoidF1 paper's Table-2 metrics and more.
"""

__version__ = "0.1.0"
