"""The base of every loss term with a coefficient, and the helpers they share."""

import keras
from keras import ops

from gated_sae_layers._validation import check_non_negative_float
from gated_sae_layers.sparse.latents import SparseLatents

PACKAGE = "gated_sae_layers"


def at_least_float32(tensor):
    """`tensor` cast to float32 if it is float16 or bfloat16, else unchanged.

    Loss terms sum over thousands of features: under mixed precision
    (`"mixed_bfloat16"`) the layers hand them bfloat16 outputs, and every
    loss reduces in float32 (the `Loss` classes already compute in float32,
    `keras.backend.floatx()`; the pure functions upcast on their own).

    Example:

    >>> import keras
    >>> from keras import ops
    >>> keras.backend.standardize_dtype(
    ...     at_least_float32(ops.ones((2,), "bfloat16")).dtype)
    'float32'
    """
    dtype = getattr(tensor, "dtype", None)
    if dtype is not None and keras.backend.standardize_dtype(dtype) in (
            "float16", "bfloat16"):
        return ops.cast(tensor, "float32")
    return tensor


def check_same_shape(y_true, y_pred, loss_name):
    """Raises a `ValueError` naming `loss_name` unless the shapes can match."""
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if len(true_shape) != len(pred_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(true_shape, pred_shape)
    ):
        raise ValueError(
            f"`{loss_name}` needs the target and the reconstruction to have "
            f"the same shape. Received: y_true.shape={true_shape}, "
            f"y_pred.shape={pred_shape}"
        )


class CoefficientLoss(keras.losses.Loss):
    """A loss `coefficient * term(y_true, y_pred)`, the coefficient a variable.

    The coefficient lives in a non-trainable `keras.Variable`, read inside
    the compiled train step: assigning it (`set_coefficient`,
    `SparsityWarmup`, `SparseAutoencoder.set_sparsity_coefficient`) changes
    the very next step, on every backend. Subclasses implement
    `call(y_true, y_pred)` and return `self.scaled(per_example_values)`.

    Three class attributes say what a subclass is:

    - `is_sparsity_term` (default `False`): `True` marks the model's
      sparsity term, the one `SparseAutoencoder.sparsity_penalties()`,
      `set_sparsity_coefficient`, `SparsityWarmup` and the resampler act on.
    - `needs_target` (default `True`): `False` for a term of one output
      alone (a penalty), which then accepts `y_true=None`.
    - `supports_sparse_latents` (default `False`): `True` for a penalty whose
      per-example value is a sum over latents that only the positive
      entries change (`relu`, `|f|` of non-negative latents, a 0/1 count).
      The sparse training path then hands it a `SparseLatents`, and it
      sums over the slots instead of all latents.

    Args:
        coefficient: float >= 0, the factor of the term.
        name: the name logged during `fit`; default from the class name.
        reduction: a Keras reduction; default `"sum_over_batch_size"`.
        dtype: the computation dtype.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> class SumPenalty(CoefficientLoss):
    ...     needs_target = False
    ...     def call(self, y_true, y_pred):
    ...         return self.scaled(ops.sum(y_pred, axis=-1))
    >>> loss = SumPenalty(0.5)
    >>> float(loss(None, np.array([[1.0, 3.0], [2.0, 2.0]])))
    2.0
    >>> loss.set_coefficient(1.0)
    >>> float(loss(None, np.array([[1.0, 3.0], [2.0, 2.0]])))
    4.0
    """

    is_sparsity_term = False
    needs_target = True
    supports_sparse_latents = False

    def __init__(self, coefficient=1.0, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        coefficient = check_non_negative_float(coefficient, "coefficient")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        # A callable initializer: inside a `StatelessScope` (a model built
        # for its shapes only, `train_step_memory`) the variable is then
        # created uninitialized instead of refused.
        self.coefficient = keras.Variable(
            keras.initializers.Constant(coefficient), shape=(), dtype="float32",
            trainable=False, name=f"{self.name}_coefficient",
        )

    def set_coefficient(self, value):
        """Assigns a new coefficient (a float >= 0); the next step uses it."""
        value = check_non_negative_float(value, "coefficient")
        self.coefficient.assign(value)

    def scaled(self, values):
        """`values * coefficient`, the coefficient cast to `values.dtype`."""
        return values * ops.cast(self.coefficient, values.dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if isinstance(y_pred, SparseLatents):
            if not self.supports_sparse_latents:
                raise TypeError(
                    f"Loss `{self.name}` ({type(self).__name__}) does not take "
                    "sparse latents (`supports_sparse_latents` is False): train "
                    "this model with compile(sparse=False).")
            # Every entry outside the slots adds 0 to the per-example sum.
            y_pred = y_pred.values
            if not self.needs_target:
                y_true = None
        if y_true is None and not self.needs_target:
            y_true = y_pred
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["coefficient"] = float(ops.convert_to_numpy(self.coefficient))
        return config
