"""Post-processing of sentence embeddings: whitening (BERT-whitening) and streaming statistics."""

from ._whitening import Whitening as Whitening
from ._whitening import WhiteningStats as WhiteningStats
from ._whitening import whitening_apply as whitening_apply
from ._whitening import whitening_fit as whitening_fit

__all__: list[str] = [
    "Whitening",
    "WhiteningStats",
    "whitening_fit",
    "whitening_apply",
]
