"""`gsl.TargetL0`: the sparsity coefficient steered to a named L0.

The controller's rules on a scripted L0 (hypothesis), its contract with
`SparsityWarmup`, a resumed `fit` and `BackupAndRestore`, the device-resident
loop's dispatch cap, and real fits on MNIST digits whose held-out L0 lands
within 10% of the target (also run on the JAX leg, `-m both_backends`).
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gated_sae_layers as gsl
from gated_sae_layers.datasets import load_mnist


def _coefficient(model):
    return float(keras.ops.convert_to_numpy(model.sparsity_penalties()[0].coefficient))


def _attached(controller, model):
    """`controller` wired to `model` as `fit` does, without training."""
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    controller.set_model(model)
    return controller


# ------------------------------------------------------------ the rules
@settings(max_examples=30, deadline=None)
@given(l0s=st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=1, max_size=40),
       target=st.floats(1.0, 200.0), steps=st.integers(1, 64))
def test_coefficient_stays_positive_and_moves_toward_the_target(l0s, target, steps):
    model = gsl.build_gated_sae(8, 32, sparsity_coefficient=0.5)
    controller = _attached(gsl.TargetL0(target, steps_per_update=steps), model)
    controller.on_epoch_begin(0)
    controller.on_train_batch_begin(0)
    previous = _coefficient(model)
    bound = controller.integral_gain * steps + 2 * controller.proportional_gain
    for index, l0 in enumerate(l0s):
        # The logs hold the running mean of the epoch: make them so that the
        # last `steps` steps had mean `l0`.
        batch = (index + 1) * steps - 1
        seen, running = controller._last
        logs = {"l0": (running * seen + l0 * steps) / (batch + 1)}
        assert controller._pending == (0.0, 0)
        integral = controller._log_integral
        controller.on_train_batch_end(batch, logs)
        now = _coefficient(model)
        assert now > 0 and math.isfinite(now)
        assert logs["sparsity_coefficient"] == pytest.approx(now, rel=1e-5)
        # The integral moves the way the error says, by at most its gain.
        moved = controller._log_integral - integral
        if l0 > target * 1.0001:
            assert moved > 0
        elif l0 < target / 1.0001:
            assert moved < 0
        assert abs(math.log(now / previous)) <= bound + 1e-4
        previous = now


def test_ramp_caps_the_coefficient_and_the_controller_takes_over():
    model = gsl.build_gated_sae(8, 32, sparsity_coefficient=2.0)
    controller = _attached(gsl.TargetL0(10.0, warmup_steps=100, steps_per_update=1),
                           model)
    controller.on_epoch_begin(0)
    for batch in range(3):
        model.optimizer.iterations.assign(batch)
        controller.on_train_batch_begin(batch)
        assert _coefficient(model) == pytest.approx(2.0 * batch / 100)
        # L0 far above the target during the ramp: no wind-up beyond it.
        controller.on_train_batch_end(batch, {"l0": 500.0})
        assert _coefficient(model) <= 2.0 * (batch + 1) / 100 + 1e-7
    # L0 below the target during the ramp: the controller goes under it.
    model.optimizer.iterations.assign(3)
    controller.on_train_batch_begin(3)
    for batch in range(3, 13):
        controller.on_train_batch_end(batch, {"l0": 1.0})
    assert _coefficient(model) < 2.0 * 13 / 100


def test_arguments_and_models_it_refuses():
    with pytest.raises(ValueError, match="target_l0"):
        gsl.TargetL0(0)
    with pytest.raises(ValueError, match="warmup_steps"):
        gsl.TargetL0(8, warmup_steps=-1)
    with pytest.raises(ValueError, match="proportional_gain"):
        gsl.TargetL0(8, proportional_gain=float("nan"))
    with pytest.raises(ValueError, match="TopK-family SAE sets its L0 with `k`"):
        gsl.TargetL0(8).set_model(gsl.build_topk_sae(8, 32, k=4))
    zero = gsl.build_relu_sae(8, 32, sparsity_coefficient=0.0)
    with pytest.raises(ValueError, match="must start positive"):
        _attached(gsl.TargetL0(8), zero)
    model = gsl.build_gated_sae(8, 32, sparsity_coefficient=1.0)
    controller = _attached(gsl.TargetL0(8), model)
    controller.on_train_batch_begin(0)
    with pytest.raises(ValueError, match="does not log"):
        controller.on_train_batch_end(0, {"loss": 1.0})


def test_short_epochs_add_up_to_an_update():
    # Epochs of 3 steps, an update every 8 steps: a window spans epochs.
    model = gsl.build_gated_sae(8, 32, sparsity_coefficient=1.0)
    controller = _attached(gsl.TargetL0(4.0), model)
    updates = []
    controller._update = lambda l0, steps: updates.append((l0, steps))
    for epoch in range(6):
        controller.on_epoch_begin(epoch)
        for batch in range(3):
            controller.on_train_batch_begin(batch)
            controller.on_train_batch_end(batch, {"l0": 10.0 + epoch})
    assert [steps for _, steps in updates] == [8, 8]
    assert updates[0][0] == pytest.approx((10 * 3 + 11 * 3 + 12 * 2) / 8)


def test_device_resident_loop_steers_every_few_steps():
    from gated_sae_layers.models._fit.device_resident import steps_per_dispatch

    model = gsl.build_gated_sae(8, 32, sparsity_coefficient=1.0)
    model.compile(optimizer="adam")
    controller = gsl.TargetL0(8, steps_per_update=6)
    controller._steps_done, controller._log_integral = 10**6, 0.0  # running, past any ramp
    assert steps_per_dispatch(model, [controller], 1000) == 6
    assert steps_per_dispatch(model, [], 1000) > 6


# ------------------------------------------------------------ real fits
@pytest.fixture(scope="module")
def digits():
    images, _ = load_mnist()
    order = np.random.default_rng(0).permutation(len(images))
    images = images[order]
    return images[500:], images[:500]


def _build(x, epochs, latent_dim=512):
    keras.utils.set_random_seed(0)
    model = gsl.build_gated_sae(784, latent_dim, sparsity_coefficient=1.0)
    model.initialize_decoder_bias(x)
    steps = epochs * int(np.ceil(len(x) / 128))
    model.compile(optimizer=keras.optimizers.Adam(
        gsl.WarmupStableDecay(3e-3, max(steps // 20, 1), steps), beta_1=0.0),
        jit_compile=True)
    return model


def _fit(model, x, epochs, callbacks):
    return model.fit(x, epochs=epochs, batch_size=128, verbose=0,
                     callbacks=list(callbacks))


class _FirstCoefficient(keras.callbacks.Callback):
    """Records the coefficient the first step of `fit` trains with."""

    def __init__(self):
        super().__init__()
        self.value = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.value is None:
            self.value = _coefficient(self.model)


@pytest.mark.parametrize("target", [8, 128])
def test_held_out_l0_lands_within_ten_percent_of_the_target(digits, target):
    x_train, x_test = digits
    controller = gsl.TargetL0(target)
    model = _build(x_train, epochs=10)
    history = _fit(model, x_train, 10, [gsl.SparsityWarmup(35), controller])
    held_out = gsl.sparsity_report(model, x_test)["l0_mean"]
    assert abs(held_out / target - 1) < 0.10, (held_out, target)
    # The coefficient is logged and left in the model.
    assert history.history["sparsity_coefficient"][-1] == pytest.approx(
        _coefficient(model), rel=1e-5)
    # The warm-up was taken over for this fit only.
    assert controller._warmups == []


def test_a_second_fit_and_a_checkpoint_resume_from_the_controlled_coefficient(
        digits, tmp_path):
    x_train = digits[0][:1024]
    warmup = gsl.SparsityWarmup(16)
    model = _build(x_train, epochs=4)
    _fit(model, x_train, 3, [warmup, gsl.TargetL0(16)])
    controlled = _coefficient(model)
    assert controlled != pytest.approx(1.0)
    assert warmup.controller is None
    # The ramp is over: a second fit starts where the first left off (the
    # warm-up, taken over again, does not put its old target back).
    first = _FirstCoefficient()
    _fit(model, x_train, 1, [warmup, gsl.TargetL0(16), first])
    assert first.value == pytest.approx(controlled, rel=1e-5)

    # BackupAndRestore: an interrupted fit, resumed in a fresh model,
    # continues from the checkpointed coefficient.
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model = _build(x_train, epochs=4)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, x_train, 4,
             [backup, gsl.SparsityWarmup(16), gsl.TargetL0(16), Interrupt()])
    interrupted = _coefficient(model)
    assert interrupted != pytest.approx(1.0)
    fresh, first = _build(x_train, epochs=4), _FirstCoefficient()
    assert _coefficient(fresh) == 1.0
    _fit(fresh, x_train, 4, [gsl.SparsityWarmup(16), gsl.TargetL0(16), backup, first])
    assert first.value == pytest.approx(interrupted, rel=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="2,000 steps: run on the JAX leg (-m both_backends)")
def test_gated_sae_train_with_its_defaults_lands_near_its_target(tmp_path, capsys):
    # `gated-sae train` with no sparsity option steers to 2% of the latents
    # over its default 2,000 steps: a sparse SAE, not a dense one.
    import json

    from sklearn.datasets import load_digits

    from gated_sae_layers.activations import ActivationStore
    from gated_sae_layers_cli import main

    store = ActivationStore.create(tmp_path / "store", 64, "float32", 1000,
                                   {"source": "sklearn digits"})
    store.append(load_digits().data.astype("float32"))
    out = tmp_path / "sae.keras"
    assert main(["train", "--store", str(tmp_path / "store"), "--out", str(out),
                 "--latent-dim", "256", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["target_l0"] == 5 and report["steps"] >= 2000
    assert abs(report["l0"] / 5 - 1) < 0.15, report
