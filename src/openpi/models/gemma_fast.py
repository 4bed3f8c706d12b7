"""The Gemma of pi0-FAST under the original openpi's module name.

The original keeps a second, big_vision-derived Gemma for pi0-FAST; here one Gemma (`openpi.models.gemma`, with a
single expert, token logits and a fixed-size decode cache) serves pi0, pi0.5 and pi0-FAST, so this module names
that one. Its layers are NNX modules: their constructors take `gemma.Config`s and `rngs`, not the linen fields
of the original's modules.
"""

from typing import Literal, TypeAlias

from openpi.models import gemma
from openpi.models import lora

# The PaliGemma sizes pi0-FAST is built with (`Pi0FASTConfig.paligemma_variant`); "dummy" is the tiny test size.
Variant: TypeAlias = Literal["dummy", "gemma_2b", "gemma_2b_lora"]

PALIGEMMA_VOCAB_SIZE = gemma.PALIGEMMA_VOCAB_SIZE
get_config = gemma.get_config
Einsum = lora.Einsum
RMSNorm = gemma.RMSNorm
Embedder = gemma.Embedder
Attention = gemma.Attention
Block = gemma.Block
KVCache = gemma.KVCache
Module = gemma.Module

__all__ = [
    "PALIGEMMA_VOCAB_SIZE",
    "Attention",
    "Block",
    "Einsum",
    "Embedder",
    "KVCache",
    "Module",
    "RMSNorm",
    "Variant",
    "get_config",
]
