"""The race's learning-rate search (``rmsprop demo`` section 2) stops runs that can no
longer win; it must pick the same lr and the same run as trying every lr to the end."""

from __future__ import annotations

import numpy as np
import pytest

from rmsprop.cli import demo
from rmsprop.problems import elongated_bowl, rosenbrock, run_on_surface


def every_lr_to_the_end(factory, surface, steps, tol):
    """The plain search: each lr runs its whole budget; ties go to the smaller lr."""
    best = None
    for lr in demo.LR_GRID:
        with np.errstate(all="ignore"):
            run = run_on_surface(factory(lr), surface, steps, tol)
        key = run.steps_to_tol if run.steps_to_tol is not None else steps + 1
        final = run.losses[-1] if np.isfinite(run.losses[-1]) else np.inf
        if best is None or (key, final) < best[:2]:
            best = (key, final, lr, run)
    return best[2], best[3]


@pytest.mark.parametrize("racer", list(demo.RACERS))
@pytest.mark.parametrize(("surface", "steps"), [(elongated_bowl(50.0), 1000), (rosenbrock(), 800)])
def test_the_search_picks_what_trying_every_lr_picks(racer, surface, steps):
    factory = demo.RACERS[racer][0]
    lr, run = demo._best_run(factory, surface, steps, 1e-3)
    expected_lr, expected = every_lr_to_the_end(factory, surface, steps, 1e-3)
    assert lr == expected_lr and run.steps_to_tol == expected.steps_to_tol
    np.testing.assert_array_equal(run.path, expected.path)
    np.testing.assert_array_equal(run.losses, expected.losses)
