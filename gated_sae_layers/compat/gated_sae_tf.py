"""The published `gated-sae-tf` 0.1.1 API, on top of the kit.

Everything the `gated-sae-tf` 0.1.1 package documents, under its names (all
exported as `gsl.*`): the `GatedSAE` model, defined here, and the functions
and schedule it documents, whose home is elsewhere in the kit:
`sparsity_report`, `decoder_sharpness` (`evaluation.analysis`), `WarmupCosineDecay`
(`schedules`), `plot_decoder_gallery`, `plot_feature_gallery` (`plots`).
See docs/migrating_from_gated_sae_tf.md.
"""

import keras
from keras import ops

from gated_sae_layers._keras_compat import output_structure
from gated_sae_layers._validation import (
    check_activations,
    check_non_negative_float,
    check_positive_float,
    check_positive_int,
    is_in_memory,
)
from gated_sae_layers.evaluation.analysis import decoder_sharpness, sparsity_report
from gated_sae_layers.models.builders import build_gated_sae
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder
from gated_sae_layers.plots import plot_decoder_gallery, plot_feature_gallery
from gated_sae_layers.schedules import WarmupCosineDecay

__all__ = ["GatedSAE", "WarmupCosineDecay", "decoder_sharpness", "plot_decoder_gallery",
           "plot_feature_gallery", "sparsity_report"]

SEED_ARGS = ("input_dim", "encoding_dim", "lambda_sparse", "aux_weight", "clip_norm")
# Keyword-only arguments beyond the seed's (`name` and `trainable` as for any
# `keras.Model`).
EXTRA_ARGS = ("name", "normalization_scale", "dtype", "trainable")
DEFAULTS = {"lambda_sparse": 1e-3, "aux_weight": 1e-2, "clip_norm": 1.0,
            "name": "gated_sae", "normalization_scale": None, "dtype": None,
            "trainable": True}


def _is_keras_tensor_structure(value):
    """True for a `KerasTensor` or a nested structure of them (Functional `inputs`)."""
    flat = keras.tree.flatten(value)
    return bool(flat) and all(isinstance(t, keras.KerasTensor) for t in flat)


def _bind_arguments(args, kwargs):
    """The seed signature, bound by name; unknown or repeated arguments raise."""
    if len(args) > len(SEED_ARGS):
        raise TypeError(
            f"GatedSAE() takes at most {len(SEED_ARGS)} positional arguments "
            f"({', '.join(SEED_ARGS)}). Received: {len(args)} positional "
            f"arguments {args!r}")
    bound = dict(zip(SEED_ARGS, args))
    repeated = sorted(set(bound) & set(kwargs))
    if repeated:
        raise TypeError(
            f"GatedSAE() got multiple values for `{repeated[0]}` (positional "
            f"and keyword). Received: {repeated[0]}={kwargs[repeated[0]]!r}")
    unknown = sorted(set(kwargs) - set(SEED_ARGS) - set(EXTRA_ARGS))
    if unknown:
        raise TypeError(
            f"GatedSAE() got unexpected keyword argument(s) "
            f"{', '.join(f'`{key}`' for key in unknown)}. Expected only: "
            f"{', '.join(SEED_ARGS + EXTRA_ARGS)}. Received: "
            f"{', '.join(f'{key}={kwargs[key]!r}' for key in unknown)}")
    bound.update(kwargs)
    for key in ("input_dim", "encoding_dim"):
        if key not in bound:
            raise TypeError(
                f"GatedSAE() missing required argument `{key}` (a positive "
                f"integer). Received arguments: {sorted(bound)}")
    return {**DEFAULTS, **bound}


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class GatedSAE(SparseAutoencoder):
    """The `gated-sae-tf` 0.1.1 model, under its names, built from the kit.

    `GatedSAE(input_dim, encoding_dim, lambda_sparse, aux_weight, clip_norm)`
    is `build_gated_sae(input_dim, encoding_dim, lambda_sparse, aux_weight)`
    plus the seed package's attributes and methods: `encode`, `decode`,
    `set_lambda`, `get_config`, and the weights `W_gate`, `b_gate`, `r_mag`,
    `b_mag`, `W_dec`, `b_dec`.

    Where `gated-sae-tf` 0.1.1 was wrong, this class is right:

    - `set_lambda` takes effect at the next step, also mid-`fit` (the seed's
      coefficient was a Python float frozen into the compiled step).
    - The logs are epoch means, not the last batch.
    - Decoder rows start at unit norm (the seed's started at 0.55-0.86) and
      stay there inside the compiled step.
    - NaN/Inf in the data raises a `ValueError` before any step; integer
      data raises a `TypeError`.
    - `W_gate` starts as `W_dec^T`, and one encoder matmul serves both paths.
    - All math is in `keras.ops`: TensorFlow and JAX backends.

    Differences to know: calling the model returns a dict of outputs (use
    `model(x)["reconstruction"]`), and `clip_norm` is applied by setting
    the optimizer's `global_clipnorm` in `compile` unless the optimizer
    already clips.

    Args:
        input_dim: int, the activation width.
        encoding_dim: int, the number of latents.
        lambda_sparse: float >= 0, the sparsity coefficient. Default 1e-3.
        aux_weight: float >= 0, the aux coefficient. Default 1e-2 (the
            seed's default; the paper uses 1.0).
        clip_norm: float > 0 or None, the global gradient-norm clip.
            Default 1.0.
        name: the model name. Default `"gated_sae"`.
        normalization_scale: `None`, or the factor the training activations
            were scaled by (`estimate_norm_scale`); saved with the model and
            folded into the weights by `fold_normalization`.
        dtype: `None` (the global policy) or the dtype policy of the
            layers, such as `"mixed_bfloat16"`.
        trainable: bool, as for any `keras.Model`. Default `True`.

    Any other keyword raises a `TypeError` (the seed package ignored
    misspelled ones, such as `lamda_sparse`).

    Example:

    >>> import numpy as np
    >>> import gated_sae_layers as gsl
    >>> sae = gsl.GatedSAE(input_dim=8, encoding_dim=32)
    >>> codes, pi_gate, relu_pi_gate = sae.encode(np.zeros((2, 8), "float32"))
    >>> tuple(codes.shape)
    (2, 32)
    """

    def __init__(self, *args, **kwargs):
        if "inputs" in kwargs or "outputs" in kwargs or (
                args and _is_keras_tensor_structure(args[0])):
            # Revived as a Functional graph (not the usual path, see
            # `from_config`); the seed attributes are read off the graph.
            self._seed_clip_norm = kwargs.pop("clip_norm", 1.0)
            super().__init__(*args, **kwargs)
            return
        seed = _bind_arguments(args, kwargs)
        # numpy integers are integers; floats and strings raise a TypeError.
        input_dim = check_positive_int(seed["input_dim"], "input_dim")
        encoding_dim = check_positive_int(seed["encoding_dim"], "encoding_dim")
        lambda_sparse = check_non_negative_float(seed["lambda_sparse"], "lambda_sparse")
        aux_weight = check_non_negative_float(seed["aux_weight"], "aux_weight")
        clip_norm = seed["clip_norm"]
        if clip_norm is not None:
            clip_norm = check_positive_float(clip_norm, "clip_norm")
        normalization_scale = seed["normalization_scale"]
        if normalization_scale is not None:
            normalization_scale = check_non_negative_float(
                normalization_scale, "normalization_scale")
        template = build_gated_sae(
            input_dim, encoding_dim,
            sparsity_coefficient=lambda_sparse,
            aux_coefficient=aux_weight,
            name=seed["name"],
            dtype=seed["dtype"],
        )
        self._seed_clip_norm = clip_norm
        super().__init__(
            inputs=template.inputs,
            outputs=output_structure(template),
            loss_terms=template.loss_terms,
            metric_terms=template.metric_terms,
            normalization_scale=normalization_scale,
            name=template.name,
            trainable=seed["trainable"],
        )

    # ---------------------------------------------------- seed attributes
    input_dim = SparseAutoencoder.input_dim

    @property
    def encoding_dim(self):
        return self.latent_dim

    @property
    def lambda_sparse(self):
        return self.sparsity_coefficient

    @property
    def aux_weight(self):
        return float(ops.convert_to_numpy(
            self.loss_terms["aux_reconstruction"].coefficient))

    @property
    def clip_norm(self):
        return self._seed_clip_norm

    W_gate = property(lambda self: self.encoder.gate_kernel)
    b_gate = property(lambda self: self.encoder.gate_bias)
    r_mag = property(lambda self: self.encoder.magnitude_log_scale)
    b_mag = property(lambda self: self.encoder.magnitude_bias)
    W_dec = property(lambda self: self.decoder.kernel)
    b_dec = property(lambda self: self.decoder.bias)

    # ------------------------------------------------------- seed methods
    def set_lambda(self, value):
        """Sets `lambda_sparse` (`set_sparsity_coefficient`); the next step uses it.

        Takes effect also mid-`fit`: the coefficient is a variable.
        """
        self.set_sparsity_coefficient(value)

    def encode(self, x):
        """Returns `(latents, gating_pre_activation, relu(gating_pre_activation))`.

        Args:
            x: activations of shape `(num_examples, input_dim)`. An
                in-memory array (numpy or eager tensor) is checked first:
                wrong rank or width, or NaN/Inf, raises a `ValueError`
                (NaN would otherwise read as "no latent fires"), a
                non-floating dtype a `TypeError`. Symbolic tensors pass.
        """
        if is_in_memory(x):
            check_activations(x, self.input_dim, "x")
        centered = self.decoder(ops.convert_to_tensor(x), mode="center")
        out = self.encoder(centered)
        pre = out["gating_pre_activation"]
        return out["latents"], pre, ops.relu(pre)

    def decode(self, f, stop_grad=False):
        """`f @ W_dec + b_dec`; `stop_grad=True` decodes through a frozen decoder.

        Args:
            f: latents of shape `(num_examples, encoding_dim)`, checked like
                the `x` of `encode` when in memory.
            stop_grad: bool, no gradient into `W_dec` and `b_dec`.
        """
        if is_in_memory(f):
            shape = tuple(f.shape)
            if len(shape) != 2 or shape[1] != self.encoding_dim:
                raise ValueError(
                    "`f` must be a 2-D array of latents of shape (num_examples, "
                    f"{self.encoding_dim}) to match the model's encoding_dim. "
                    f"Received: f.shape={shape}")
            check_activations(f, self.encoding_dim, "f")
        mode = "frozen" if stop_grad else "decode"
        return self.decoder(ops.convert_to_tensor(f), mode=mode)

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        optimizer = keras.optimizers.get(optimizer)
        clips = (optimizer.clipnorm, optimizer.global_clipnorm, optimizer.clipvalue)
        if self.clip_norm is not None and all(c is None for c in clips):
            optimizer.global_clipnorm = self.clip_norm
        super().compile(optimizer, *args, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "input_dim": self.input_dim,
            "encoding_dim": self.encoding_dim,
            "lambda_sparse": self.lambda_sparse,
            "aux_weight": self.aux_weight,
            "clip_norm": self.clip_norm,
            "normalization_scale": self.normalization_scale,
            "dtype": self.encoder.dtype_policy.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Files saved before `normalization_scale`, `dtype` and `trainable`
        # were in the config load with their defaults.
        return cls(**config)
