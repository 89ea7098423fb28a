"""A small numpy reference of every SAE's forward pass and loss terms, in float64.

By concept: encoders (the gated SAE, Rajamanoharan et al. 2024, eq. 3-8, and
the variants), decoding, the loss terms (per example summed over features,
mean over the batch), and helpers that read or set a model's weights.
"""

import numpy as np


def _f64(*arrays):
    return [np.asarray(a, "float64") for a in arrays]


# ------------------------------------------------------------------ encoders
def gated_forward(x, W_gate, b_gate, r_mag, b_mag, W_dec, b_dec):
    x = x.astype("float64")
    x_center = x - b_dec
    pi_gate = x_center @ W_gate + b_gate
    f_gate = (pi_gate > 0).astype("float64")
    W_mag = W_gate * np.exp(r_mag)[None, :]
    f_mag = np.maximum(x_center @ W_mag + b_mag, 0.0)
    latents = f_gate * f_mag
    return {
        "latents": latents,
        "gating_pre_activation": pi_gate,
        "reconstruction": decode(latents, W_dec, b_dec),
        "aux_reconstruction": decode(relu_latents(pi_gate), W_dec, b_dec),
    }


def pre_activation(x, W_enc, b_enc, b_dec):
    x, W_enc, b_enc, b_dec = _f64(x, W_enc, b_enc, b_dec)
    return (x - b_dec) @ W_enc + b_enc


def relu_latents(z):
    return np.maximum(z, 0.0)


def topk_latents(z, k):
    """relu of the k largest entries per row (z has no ties in the tests)."""
    out = np.zeros_like(z)
    idx = np.argsort(-z, axis=-1)[:, :k]
    rows = np.arange(len(z))[:, None]
    out[rows, idx] = np.maximum(z[rows, idx], 0.0)
    return out


def batch_topk_latents(z, k):
    a = np.maximum(z, 0.0).ravel()
    keep = np.argsort(-a)[: z.shape[0] * k]
    out = np.zeros_like(a)
    out[keep] = a[keep]
    return out.reshape(z.shape)


def jumprelu_latents(z, theta):
    return np.where(z > theta, z, 0.0), (z > theta).astype("float64")


def auxk(z, steps_since_fired, dead_steps_threshold, k_aux):
    dead = np.asarray(steps_since_fired) >= dead_steps_threshold
    return topk_latents(np.where(dead, z, 0.0), min(k_aux, z.shape[1]))


def steps_update(steps_since_fired, latents):
    fired = (latents > 0).any(axis=0)
    return np.where(fired, 0, np.asarray(steps_since_fired) + 1)


# ------------------------------------------------------------------ decoding
def decode(latents, W_dec, b_dec):
    latents, W_dec, b_dec = _f64(latents, W_dec, b_dec)
    return latents @ W_dec + b_dec


def auxk_residual(x, reconstruction, aux_latents, W_dec):
    x, reconstruction, aux_latents, W_dec = _f64(x, reconstruction, aux_latents, W_dec)
    r = (x - reconstruction) - aux_latents @ W_dec
    return np.where((aux_latents > 0).any(-1, keepdims=True), r, 0.0)


# --------------------------------------------------------------- loss terms
def squared_error(x, x_hat):
    """`mean_batch sum_j (x - x_hat)_j^2`: ReconstructionLoss, AuxReconstruction."""
    return np.mean(np.sum((np.asarray(x, "float64") - x_hat) ** 2, -1))


def penalty(coefficient, values, square=False):
    """`coefficient * mean_batch sum_j |v_j|` (or `v_j^2`): the sparsity and AuxK terms."""
    values = np.asarray(values, "float64")
    per_row = np.sum(values ** 2 if square else np.abs(values), -1)
    return coefficient * np.mean(per_row)


def gated_losses(x, outputs, sparsity_coefficient, aux_coefficient):
    x = x.astype("float64")
    return {
        "reconstruction": squared_error(x, outputs["reconstruction"]),
        "sparsity": penalty(sparsity_coefficient,
                            relu_latents(outputs["gating_pre_activation"])),
        "aux": aux_coefficient * squared_error(x, outputs["aux_reconstruction"]),
    }


# ------------------------------------------------------------ model weights
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
