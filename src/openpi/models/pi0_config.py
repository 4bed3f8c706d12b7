"""Where the original openpi keeps `Pi0Config` today (pi0 and pi0.5, `Pi0Config(pi05=True)`); the class lives in
`openpi.models.pi0` beside the model it configures."""

from openpi.models.pi0 import Pi0Config

__all__ = ["Pi0Config"]
