"""Losses: top-k and Taylor cross-entropy, contrastive and self-supervised losses, entropy."""

from ._am_softmax import am_softmax_cross_entropy as am_softmax_cross_entropy
from ._capsule_margin import capsule_margin_loss as capsule_margin_loss
from ._contrastive import info_nce as info_nce
from ._knn_entropy import knn_entropy as knn_entropy
from ._siamese import byol_loss as byol_loss
from ._siamese import byol_tau_schedule as byol_tau_schedule
from ._siamese import simsiam_loss as simsiam_loss
from ._taylor_ce import taylor_softmax_cross_entropy as taylor_softmax_cross_entropy
from ._teaforn import teaforn_loss as teaforn_loss
from ._topk_ce import topk_softmax_cross_entropy as topk_softmax_cross_entropy
from ._vae_cluster import VAEClusterLoss as VAEClusterLoss
from ._vae_cluster import vae_cluster_loss as vae_cluster_loss

__all__: list[str] = [
    "am_softmax_cross_entropy",
    "capsule_margin_loss",
    "info_nce",
    "knn_entropy",
    "byol_loss",
    "byol_tau_schedule",
    "simsiam_loss",
    "taylor_softmax_cross_entropy",
    "teaforn_loss",
    "topk_softmax_cross_entropy",
    "VAEClusterLoss",
    "vae_cluster_loss",
]
