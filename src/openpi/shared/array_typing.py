"""Shape-annotated array types (jaxtyping) used across the model and data code."""

from typing import TypeAlias

import jax
from jaxtyping import Array
from jaxtyping import Bool
from jaxtyping import Float
from jaxtyping import Int
from jaxtyping import Key
from jaxtyping import PyTree
from jaxtyping import Real
from jaxtyping import UInt8
import numpy as np

ArrayT: TypeAlias = Array | np.ndarray | jax.ShapeDtypeStruct
KeyArrayLike: TypeAlias = Key[Array, ""] | jax.Array
Params: TypeAlias = PyTree[ArrayT]

__all__ = ["Array", "ArrayT", "Bool", "Float", "Int", "KeyArrayLike", "Params", "PyTree", "Real", "UInt8"]
