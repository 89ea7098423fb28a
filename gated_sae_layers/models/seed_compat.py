"""`GatedSAE`: the `gated-sae-tf` 0.1.1 API on top of the kit."""

import keras
import numpy as np  # noqa: F401 (doctest)
from keras import ops

from gated_sae_layers._validation import check_non_negative_float, check_positive_int
from gated_sae_layers.models.gated_sae import build_gated_sae
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder

SEED_ARGS = ("input_dim", "encoding_dim", "lambda_sparse", "aux_weight", "clip_norm")


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

    Example:

    >>> import gated_sae_layers as gsl
    >>> sae = gsl.GatedSAE(input_dim=8, encoding_dim=32)
    >>> codes, pi_gate, relu_pi_gate = sae.encode(np.zeros((2, 8), "float32"))
    >>> tuple(codes.shape)
    (2, 32)
    """

    def __init__(self, *args, **kwargs):
        if "inputs" in kwargs or (args and not isinstance(args[0], int)):
            # Revived as a Functional graph (not the usual path, see
            # `from_config`); the seed attributes are read off the graph.
            self._seed_clip_norm = kwargs.pop("clip_norm", 1.0)
            super().__init__(*args, **kwargs)
            return
        seed = dict(zip(SEED_ARGS, args))
        for key in SEED_ARGS:
            if key in kwargs:
                seed[key] = kwargs.pop(key)
        for key in ("input_dim", "encoding_dim"):
            if key not in seed:
                raise TypeError(f"GatedSAE() missing required argument `{key}`")
        clip_norm = seed.get("clip_norm", 1.0)
        if clip_norm is not None:
            check_non_negative_float(clip_norm, "clip_norm")
        template = build_gated_sae(
            check_positive_int(seed["input_dim"], "input_dim"),
            check_positive_int(seed["encoding_dim"], "encoding_dim"),
            sparsity_coefficient=seed.get("lambda_sparse", 1e-3),
            aux_coefficient=seed.get("aux_weight", 1e-2),
            name=kwargs.pop("name", "gated_sae"),
        )
        kwargs.pop("trainable", None)
        self._seed_clip_norm = clip_norm
        super().__init__(
            inputs=template.inputs,
            outputs=template._outputs_struct,
            loss_terms=template.loss_terms,
            metric_terms=template.metric_terms,
            name=template.name,
            **kwargs,
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
    def encode(self, x):
        """Returns `(latents, gating_pre_activation, relu(gating_pre_activation))`."""
        centered = self.decoder(ops.convert_to_tensor(x), mode="center")
        out = self.encoder(centered)
        pre = out["gating_pre_activation"]
        return out["latents"], pre, ops.relu(pre)

    def decode(self, f, stop_grad=False):
        """`f @ W_dec + b_dec`; `stop_grad=True` decodes through a frozen decoder."""
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
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
