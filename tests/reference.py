"""A small numpy reference of the gated SAE (Rajamanoharan et al. 2024, eq. 3-8)."""

import numpy as np


def gated_forward(x, W_gate, b_gate, r_mag, b_mag, W_dec, b_dec):
    x = x.astype("float64")
    x_center = x - b_dec
    pi_gate = x_center @ W_gate + b_gate
    f_gate = (pi_gate > 0).astype("float64")
    W_mag = W_gate * np.exp(r_mag)[None, :]
    f_mag = np.maximum(x_center @ W_mag + b_mag, 0.0)
    latents = f_gate * f_mag
    x_hat = latents @ W_dec + b_dec
    x_aux = np.maximum(pi_gate, 0.0) @ W_dec + b_dec
    return {
        "latents": latents,
        "gating_pre_activation": pi_gate,
        "reconstruction": x_hat,
        "aux_reconstruction": x_aux,
    }


def gated_losses(x, outputs, sparsity_coefficient, aux_coefficient):
    x = x.astype("float64")
    return {
        "reconstruction": np.mean(np.sum((x - outputs["reconstruction"]) ** 2, -1)),
        "sparsity": sparsity_coefficient * np.mean(
            np.sum(np.maximum(outputs["gating_pre_activation"], 0.0), -1)),
        "aux": aux_coefficient * np.mean(
            np.sum((x - outputs["aux_reconstruction"]) ** 2, -1)),
    }


def weights_of(model):
    encoder, decoder = model.encoder, model.decoder
    return {
        "W_gate": np.asarray(encoder.gate_kernel, "float64"),
        "b_gate": np.asarray(encoder.gate_bias, "float64"),
        "r_mag": np.asarray(encoder.magnitude_log_scale, "float64"),
        "b_mag": np.asarray(encoder.magnitude_bias, "float64"),
        "W_dec": np.asarray(decoder.kernel, "float64"),
        "b_dec": np.asarray(decoder.bias, "float64"),
    }


def randomize(model, seed=0, scale=0.5):
    """Gives every weight non-trivial values (biases and r_mag included)."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        shape = tuple(variable.shape)
        values = rng.normal(0, scale, shape).astype("float32")
        if variable.path.endswith("kernel") and variable.path.startswith("decoder"):
            values /= np.linalg.norm(values, axis=1, keepdims=True)
        variable.assign(values)
