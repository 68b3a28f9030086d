"""Distances between sets of word vectors: word mover's and word rotator's distance, bounds."""

from ._word import word_centroid_distance as word_centroid_distance
from ._word import word_movers_distance as word_movers_distance
from ._word import word_rotators_distance as word_rotators_distance
from ._word import wrd_lower_bound as wrd_lower_bound

__all__: list[str] = [
    "word_centroid_distance",
    "word_movers_distance",
    "word_rotators_distance",
    "wrd_lower_bound",
]
