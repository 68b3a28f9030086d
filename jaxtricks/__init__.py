"""jaxtricks: techniques from Su Jianlin's Scientific Spaces (kexue.fm) for JAX, optax, Flax."""

__version__ = "0.1.0"

from jaxtricks import activations as activations
from jaxtricks import attribution as attribution
from jaxtricks import distances as distances
from jaxtricks import embeddings as embeddings
from jaxtricks import losses as losses
from jaxtricks import nn as nn
from jaxtricks import numerics as numerics
from jaxtricks import optim as optim
from jaxtricks import regularizers as regularizers
from jaxtricks import remat as remat
