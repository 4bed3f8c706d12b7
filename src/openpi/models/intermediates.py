"""Named intermediate values a model hands out for inspection (the parity check against the original's numbers, tests)
without changing what its methods return.

A model calls `record(x_t=..., v_t=...)`; outside a `capture` block that does nothing, so training and serving pay
nothing for it. Inside a jitted function the captured values are tracers: return them from that function.
"""

from collections.abc import Iterator
import contextlib
import contextvars
from typing import Any

_active: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("intermediates", default=None)


def record(**values: Any) -> None:
    """Hands `values` to the innermost `capture` block around this call; nothing happens outside one.

    Record values of the function being traced, not from inside a `jax.lax.scan` / remat body: those would leak.
    """
    captured = _active.get()
    if captured is not None:
        captured.update(values)


@contextlib.contextmanager
def capture() -> Iterator[dict[str, Any]]:
    """A dict that collects, by name, what `record` is handed inside the block (a later value replaces an earlier
    one of the same name)."""
    captured: dict[str, Any] = {}
    token = _active.set(captured)
    try:
        yield captured
    finally:
        _active.reset(token)
