"""Shared by the hostile-input tests: arguments must be refused before any pass.

`tests/test_hostile_dashboard.py` and `tests/test_hostile_evaluation.py`
replace the functions that batch the rows by one that raises
`PassOverData`, so that a check made only after a pass over the data
fails the test, and check the refusals on the same small TopK SAE.
"""

import keras

import gated_sae_layers as gsl


class PassOverData(AssertionError):
    pass


def refuse_passes(monkeypatch, *functions):
    """Replaces each of `functions` (dotted paths) by one raising `PassOverData`."""
    def refuse(*args, **kwargs):
        raise PassOverData("a pass over the data began before the arguments were checked")

    for function in functions:
        monkeypatch.setattr(function, refuse)


def small_topk_sae(input_dim):
    """A seeded `topk` SAE of 16 latents, `k=2`, on rows of `input_dim`."""
    keras.utils.set_random_seed(0)
    return gsl.build_sae("topk", input_dim, 16, k=2)
