"""Checks our pi0, pi0.5 or pi0-FAST against a numeric fixture made with the original openpi; exits 1 past tolerance.

uv run scripts/check_parity.py tests/fixtures/pi0_tiny_parity.npz [--json PATH] [--atol 1e-4]
"""

import dataclasses
import pathlib
import sys

import tyro
from tyro.conf import Positional

from openpi.models import parity


@dataclasses.dataclass
class Args:
    npz: Positional[pathlib.Path]
    """Fixture arrays (params/*, in/*, out/*, out_bf16/*)."""
    json: pathlib.Path | None = None
    """Fixture description; defaults to the npz path with a .json suffix."""
    atol: float = parity.FLOAT32_ATOL
    """Tolerance for float32 outputs (booleans and integers must match exactly)."""
    bf16_atol: float = parity.BFLOAT16_ATOL
    """Tolerance for out_bf16/* outputs (an output whose original bf16 and f32 values lie further apart gets that
    distance instead)."""


def main(args: Args) -> int:
    comparisons = parity.check_fixture(args.npz, args.json, atol=args.atol, bf16_atol=args.bf16_atol)
    width = max(len(c.name) for c in comparisons)
    for c in comparisons:
        print(f"{c.name:<{width}}  max|diff| {c.max_abs_diff:.3e}  atol {c.atol:.1e}  {'ok' if c.ok else 'FAIL'}")
    failed = [c for c in comparisons if not c.ok]
    print(f"{len(comparisons) - len(failed)} of {len(comparisons)} outputs within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
