"""The quality suite of compact state (``rmsprop.cli.quality``): on every problem and
switch combination, bf16 and 8-bit state never go non-finite where fp32 state does not,
and end within 2% of fp32 state's loss (the numbers: BENCHMARKS.md, "Compact state you
can trust")."""

from __future__ import annotations

import math

import pytest

from rmsprop.cli import quality

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("problem", list(quality.PROBLEMS))
def test_compact_state_ends_within_two_percent_of_fp32_state(problem):
    for config in quality.CONFIGS:
        reference = quality.final_loss(quality.run(problem, "fp32", config))
        assert math.isfinite(reference), (problem, config)
        for state in ("bf16", "int8"):
            loss = quality.final_loss(quality.run(problem, state, config))
            assert math.isfinite(loss), (problem, config, state)
            assert abs(loss - reference) <= 0.02 * reference, (
                problem,
                config,
                state,
                loss,
                reference,
            )
