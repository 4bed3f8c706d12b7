"""openpi.models.intermediates: a model's recorded values reach a capture block, and nothing is kept outside one."""

import jax
import jax.numpy as jnp
import pytest

from openpi.models import intermediates
from openpi.models import lora


def _model_step(x: jax.Array) -> jax.Array:
    doubled = 2 * x
    intermediates.record(doubled=doubled)
    return doubled + 1


def test_capture_collects_recorded_values_also_as_outputs_of_a_jitted_function():
    with intermediates.capture() as eager:
        assert _model_step(jnp.ones(2)).tolist() == [3.0, 3.0]
    assert eager["doubled"].tolist() == [2.0, 2.0]

    @jax.jit
    def traced(x):
        with intermediates.capture() as values:
            out = _model_step(x)
        return out, values

    _, values = traced(jnp.arange(3.0))
    assert values["doubled"].tolist() == [0.0, 2.0, 4.0]


def test_values_recorded_outside_a_capture_go_nowhere_and_capture_blocks_nest():
    with intermediates.capture() as outer:
        with intermediates.capture() as inner:
            _model_step(jnp.ones(1))
        assert "doubled" in inner
        assert "doubled" not in outer
    _model_step(jnp.ones(1))
    assert "doubled" not in outer


def test_lora_freeze_filter_takes_one_flag_per_gemma_expert():
    with pytest.raises(ValueError, match=r"lora_experts: expected one flag per Gemma expert \(1 or 2\), got \[\]"):
        lora.freeze_filter([])
