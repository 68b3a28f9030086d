"""Flax NNX modules and the pure functions behind them: positions, attention, Transformers."""

from ._attention import RoPEAttention as RoPEAttention
from ._attention import rope_attention as rope_attention
from ._capsule import Capsule as Capsule
from ._capsule import dynamic_routing as dynamic_routing
from ._capsule import squash as squash
from ._crf import CRF as CRF
from ._crf import crf_log_likelihood as crf_log_likelihood
from ._crf import crf_log_partition as crf_log_partition
from ._crf import crf_marginals as crf_marginals
from ._crf import crf_viterbi as crf_viterbi
from ._heads import CascadingRejection as CascadingRejection
from ._heads import CosineDense as CosineDense
from ._heads import cascade_residuals as cascade_residuals
from ._heads import cascade_scores as cascade_scores
from ._heads import cosine_logits as cosine_logits
from ._rope import apply_rope as apply_rope
from ._rope import apply_rope_2d as apply_rope_2d
from ._rope import rope_permutation as rope_permutation
from ._rope import sinusoidal_embedding as sinusoidal_embedding
from ._transformer import TransformerEncoder as TransformerEncoder
from ._vq import VQVAE as VQVAE
from ._vq import VectorQuantizer as VectorQuantizer
from ._vq import VectorQuantizerEMA as VectorQuantizerEMA
from ._vq import VQOutput as VQOutput
from ._vq import VQStatistics as VQStatistics
from ._vq import nearest_codes as nearest_codes
from ._vq import vector_quantize as vector_quantize
from ._widen import widen as widen

__all__: list[str] = [
    "RoPEAttention",
    "rope_attention",
    "TransformerEncoder",
    "sinusoidal_embedding",
    "apply_rope",
    "apply_rope_2d",
    "rope_permutation",
    "widen",
    "CosineDense",
    "cosine_logits",
    "CascadingRejection",
    "cascade_scores",
    "cascade_residuals",
    "squash",
    "dynamic_routing",
    "Capsule",
    "CRF",
    "crf_log_likelihood",
    "crf_log_partition",
    "crf_viterbi",
    "crf_marginals",
    "vector_quantize",
    "nearest_codes",
    "VQOutput",
    "VQStatistics",
    "VectorQuantizer",
    "VectorQuantizerEMA",
    "VQVAE",
]
