"""A small numpy reference of the SAE variants' forward passes and loss terms."""

import numpy as np


def _f64(*arrays):
    return [np.asarray(a, "float64") for a in arrays]


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


def decode(latents, W_dec, b_dec):
    latents, W_dec, b_dec = _f64(latents, W_dec, b_dec)
    return latents @ W_dec + b_dec


def auxk_residual(x, reconstruction, aux_latents, W_dec):
    x, reconstruction, aux_latents, W_dec = _f64(x, reconstruction, aux_latents, W_dec)
    r = (x - reconstruction) - aux_latents @ W_dec
    return np.where((aux_latents > 0).any(-1, keepdims=True), r, 0.0)


def squared_error(x, x_hat):
    return np.mean(np.sum((np.asarray(x, "float64") - x_hat) ** 2, -1))


def penalty(coefficient, values, square=False):
    values = np.asarray(values, "float64")
    per_row = np.sum(values ** 2 if square else np.abs(values), -1)
    return coefficient * np.mean(per_row)
