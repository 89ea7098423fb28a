"""The base class of every SAE encoder layer, and the protocol it declares."""

import keras

from gated_sae_layers._validation import check_positive_int
from gated_sae_layers.distribution import layout


class SparseEncoder(keras.layers.Layer):
    """Base of every SAE encoder layer of the kit, and what each one exposes.

    An encoder takes the centered input `x - b_dec` of shape
    `(..., input_dim)` and returns a dict that holds at least `"latents"`,
    `(..., latent_dim)`, plus whatever its loss terms read.
    `SparseAutoencoder.encoder` finds the model's encoder through this class.

    The protocol, which the tools that act on an encoder use instead of
    looking for attribute names (`DeadLatentResampler`, `fold_normalization`,
    the tied initialization of the `build_*` functions):

    - `input_kernel`: the `(input_dim, latent_dim)` variable that multiplies
      the centered input (`W_gate` of the gated encoder, `W_enc` otherwise);
    - `latent_parameters()`: the other per-latent variables, each with the
      value a freshly initialized latent has (`DeadLatentResampler` writes
      it into a dead latent's entries);
    - `output_names()`: the keys of the dict that `call` returns;
    - `latent_axes`: a class attribute, declared beside `build`: for every
      variable `build` creates, its axes, `"latent"` marking the latent
      axis (`{"kernel": (None, "latent"), "bias": ("latent",)}`; `()` for a
      scalar). `latent_layout_map` shards the variables by it; an encoder
      that declares nothing (`None`, the base's) raises when it is built
      under a latent layout instead of training unsharded.

    The base validates and stores the arguments every encoder has, fixes the
    input width at build (`_input_dim`), gives the output shapes from
    `output_names()`, and serializes those arguments. A subclass creates
    its weights in `build` and defines `input_kernel` and
    `latent_parameters()`.

    Args:
        latent_dim: int, the number of dictionary latents.
        kernel_initializer: initializer of the encoder's input kernel.
        bias_initializer: initializer of its biases.
        **kwargs: base `Layer` arguments (`name`, `dtype`, ...).
    """

    # Declared by each subclass beside its `build`; see the class docstring.
    latent_axes = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        layout.register_encoder(cls)

    def __init__(self, latent_dim, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_spec = keras.layers.InputSpec(min_ndim=2)

    @property
    def input_kernel(self):
        """The `(input_dim, latent_dim)` variable applied to the centered input."""
        raise NotImplementedError(
            f"{type(self).__name__} must define `input_kernel`, the "
            "(input_dim, latent_dim) variable applied to the centered input.")

    def latent_parameters(self):
        """`[(variable, reset_value), ...]`: the per-latent variables besides the kernel.

        Each variable has shape `(latent_dim,)`; `reset_value` is what a newly
        initialized latent holds there.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define `latent_parameters()`: its "
            "(latent_dim,) variables, each with the value of a fresh latent.")

    def output_names(self):
        """The keys of the dict that `call` returns."""
        return ("latents",)

    # ------------------------------------------------ the sparse training path
    def sparse_slots(self, cap):
        """The slots per row this encoder needs on the sparse path.

        `None` (the default): the encoder has no sparse path and trains
        densely. A TopK encoder returns its `k`; an encoder whose number of
        active latents varies returns `cap` (the static bound the sparse
        step sets, `compile(sparse_cap=...)`), at most `latent_dim`.
        """
        return None

    def sparse_selection(self, inputs, slots):
        """The `Selection` of a batch: the dense matmul and the latents given slots.

        Runs before the differentiable step, without gradient. See
        `gated_sae_layers/sparse` and `docs/sparse_training.md`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no sparse training path.")

    def sparse_aux_selection(self, selection):
        """`selection` completed for an auxiliary term the step needs this time.

        A selection whose `extra["aux_needed"]` is a bool tensor asks the
        step to branch: where it is true, the step runs on the selection this
        returns (the AuxK encoders add the slots of the dead latents), else
        on `selection` as it is. The default has no such term.
        """
        return selection

    def sparse_call(self, inputs, selection, training=None):
        """`call` restricted to the slots of `selection`.

        Returns the dict `call` returns, with every `(rows, latent_dim)`
        output as a `SparseLatents`; equal to `call` (to float rounding)
        whenever the selection holds every active latent of each row.
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no sparse training path.")

    def add_weight(self, *args, **kwargs):
        """`Layer.add_weight`; under a latent layout the variable must be in `latent_axes`."""
        layout.check_encoder_variable(self, kwargs.get("name"))
        return super().add_weight(*args, **kwargs)

    def _input_dim(self, input_shape):
        """The input width; fixes it in the input spec (call this in `build`)."""
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known last axis (input_dim) to "
                f"build. Received: input_shape={tuple(input_shape)}"
            )
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        return input_dim

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[:-1]) + (self.latent_dim,)
        return {name: shape for name in self.output_names()}

    def get_config(self):
        config = super().get_config()
        config.update({
            "latent_dim": self.latent_dim,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config
