"""`SparseAutoencoder`: a Functional model that carries its own SAE loss terms."""

import keras
from keras import ops

from gated_sae_layers._keras_compat import output_structure, sublayers
from gated_sae_layers._validation import check_non_negative_float, check_positive_float
from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.layers.decoder_norm_weighting import attach_decoder
from gated_sae_layers.layers.unit_norm_decoder import unit_norm_decoders
from gated_sae_layers.models import inference
from gated_sae_layers.models import input_rule
from gated_sae_layers.models import learning_rates
from gated_sae_layers.models._fit import finite_step
from gated_sae_layers.models._fit.arguments import check_steps_per_execution
from gated_sae_layers.models._fit.run import run_fit
from gated_sae_layers.models.sparse_path import plan as sparse_plan
from gated_sae_layers.models.terms import resolve_terms, serialize_terms


class ModelCaches:
    """What a `SparseAutoencoder` computes once and keeps: untracked, never saved.

    Declared here, so the functions that fill them (`models/inference.py`,
    `models/_fit/device_resident.py`) set no attribute on the model from
    outside:

    - `latents_model`: `None`, or the Functional model from the input to the
      `latents` output that `encode` runs (it shares the model's layers);
    - `device_resident_runners`: the compiled loops of the device-resident
      `fit`, by batch size, input dtype and sparse plan; `compile` empties it.
    """

    __slots__ = ("latents_model", "device_resident_runners")

    def __init__(self):
        self.latents_model = None
        self.device_resident_runners = {}


def check_architecture(value):
    """`value` as a `{"name": str, "arguments": dict}` record, or None.

    The record a builder leaves on its model (`assembly.record_architecture`):
    the name of its `Architecture` and the builder's arguments but
    `input_dim`, `latent_dim`, `name` and `dtype`.
    """
    if value is None:
        return None
    if (not isinstance(value, dict) or set(value) != {"name", "arguments"}
            or not isinstance(value["name"], str) or not value["name"]
            or not isinstance(value["arguments"], dict)
            or not all(isinstance(key, str) for key in value["arguments"])):
        raise TypeError(
            "`architecture` must be None or a dict {'name': str, 'arguments': dict "
            f"with str keys}}. Received: architecture={value!r}")
    return {"name": value["name"], "arguments": dict(value["arguments"])}


@keras.saving.register_keras_serializable(package="gated_sae_layers")
class SparseAutoencoder(keras.Model):
    """A Functional SAE model trained with the stock `fit` on its own loss terms.

    Build it like any Functional model, with a dict of named outputs, and
    name which output each loss term and metric reads:

    ```
    loss = sum over (output_name, loss) in loss_terms of
               loss(target, outputs[output_name])  + model.losses (regularizers)
    ```

    where `target` is the activations to reconstruct: the model input (the
    default), the `y` given to `fit`, or the output named by `target`
    (for an SAE on a hidden layer of a larger model). `compile` needs only
    the optimizer; `fit(x)` logs the total `loss`, every loss term under its
    own name and every metric, as epoch values.

    Non-finite data never reaches a training step: in-memory arrays (numpy,
    TF, JAX, pandas, or a dict naming the model's input) are checked before
    any work, after the cast to float32 (`ValueError` naming the bad rows),
    and the batches of a `tf.data.Dataset` or a Python generator are checked
    as they stream, dtype and width included. Whatever the input, a step
    whose loss or a gradient is not finite changes no weight and `fit`
    raises (`models/_fit/finite_step.py`). Non-float data raises a `TypeError`;
    `sample_weight` and `class_weight` raise (every row counts once).
    `predict` refuses NaN/Inf rows like `fit`.

    Args:
        inputs, outputs, name: as for a Functional `keras.Model`; `outputs`
            must be a dict of named tensors.
        loss_terms: dict mapping an output name to a `keras.losses.Loss`
            (`ReconstructionLoss`, `SparsityPenalty`, `AuxReconstruction`,
            or any Keras loss of `(target, output)`). Logged under each
            loss's `name`.
        metric_terms: dict mapping an output name to a list of
            `keras.metrics.Metric` objects updated with `(target, output)`.
        target: `None` (reconstruct the model input, or `y` if `fit` gets
            one) or the name of an output holding the activations to
            reconstruct (gradients do not flow into it).
        normalization_scale: `None`, or the factor the training activations
            were scaled by (`estimate_norm_scale`); saved with the model and
            folded into the weights by `fold_normalization`.
        architecture: `None`, or the record of the builder that made the
            model, `{"name": ..., "arguments": {...}}` (the `build_*`
            functions set it; see `architecture`). Saved with the model.
        learning_rate_multipliers: `None`, or `{variable path: multiplier}`,
            each a float > 0 or a Keras `LearningRateSchedule` of the
            optimizer's step: `compile` makes the optimizer step each of
            those variables that many times as far as the rest
            (`models/learning_rates.py`), e.g. `{"decoder/kernel": 3.0}`.
            Saved with the model.

    Example:

    >>> import gated_sae_layers as gsl
    >>> model = gsl.build_gated_sae(input_dim=8, latent_dim=32,
    ...                             sparsity_coefficient=1e-3)
    >>> sorted(model.loss_terms)
    ['aux_reconstruction', 'gating_pre_activation', 'reconstruction']
    """

    def __init__(self, *args, loss_terms=None, metric_terms=None, target=None,
                 normalization_scale=None, architecture=None,
                 learning_rate_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.normalization_scale = normalization_scale
        self.architecture = architecture
        self.learning_rate_multipliers = learning_rate_multipliers
        # Untracked, unsaved; see `ModelCaches`.
        object.__setattr__(self, "caches", ModelCaches())
        outputs = output_structure(self)
        if not isinstance(outputs, dict):
            raise ValueError(
                "SparseAutoencoder needs `outputs` to be a dict of named tensors "
                "(for example {'reconstruction': ..., 'latents': ...}). Received: "
                f"outputs of type {type(outputs).__name__}"
            )
        if target is not None and target not in outputs:
            raise ValueError(
                f"`target` must be None or one of the output names "
                f"{sorted(outputs)}. Received: target={target!r}"
            )
        self.target = target
        decoders = unit_norm_decoders(self)
        if len(decoders) == 1:
            # `from_config` outside `keras.saving` cannot share the decoder
            # with a `DecoderNormWeighting`: give it back here.
            attach_decoder(self, decoders[0])
        losses, metrics = resolve_terms(outputs, loss_terms, metric_terms)
        # Plain dicts, kept out of Keras tracking; the objects that hold state
        # are tracked through the flat lists below.
        object.__setattr__(self, "loss_terms", losses)
        object.__setattr__(self, "metric_terms", metrics)
        self._term_trackers = [
            keras.metrics.Mean(name=loss.name) for loss in losses.values()]
        self._term_metrics = [m for ms in metrics.values() for m in ms]
        # Loss coefficients become non-trainable model variables, so every
        # backend reads their current value inside the compiled step.
        self._loss_coefficients = [
            loss.coefficient for loss in losses.values()
            if isinstance(getattr(loss, "coefficient", None), keras.Variable)
        ]

    # ----------------------------------------------------------- structure
    @property
    def decoder(self):
        """The model's `UnitNormDecoder` layer."""
        decoders = unit_norm_decoders(self)
        if len(decoders) != 1:
            raise ValueError(
                f"Model '{self.name}' has {len(decoders)} UnitNormDecoder "
                "layers; `decoder` needs exactly one. Use `get_layer(name)`."
            )
        return decoders[0]

    @property
    def encoder(self):
        """The model's encoder layer (a `GatedEncoder` or another `SparseEncoder`)."""
        encoders = [
            layer for layer in sublayers(self) if isinstance(layer, SparseEncoder)
        ]
        if len(encoders) != 1:
            raise ValueError(
                f"Model '{self.name}' has {len(encoders)} SparseEncoder layers; "
                "`encoder` needs exactly one. Use `get_layer(name)`."
            )
        return encoders[0]

    @property
    def normalization_scale(self):
        """`None`, or the factor the training activations were multiplied by.

        Set it (a finite number > 0) when training on `scale * x`
        (`estimate_norm_scale`); it is saved with the model and
        `fold_normalization` folds it into a copy that takes raw activations.
        """
        return self._normalization_scale

    @normalization_scale.setter
    def normalization_scale(self, value):
        if value is not None:
            value = check_positive_float(value, "normalization_scale")
        object.__setattr__(self, "_normalization_scale", value)

    @property
    def architecture(self):
        """`None`, or `{"name": ..., "arguments": {...}}`: the builder that made the model.

        Every `build_*` function sets it (`assembly.record_architecture`):
        the name of its `Architecture` record (`gsl.ARCHITECTURES`) and the
        arguments it was called with but `input_dim`, `latent_dim`, `name`
        and `dtype`, so `build_sae(name, input_dim, latent_dim, **arguments)`
        builds the same model. It is saved with the model; a model saved
        before it existed loads with `None` (interop then infers the
        architecture from the layers).

        Example:

        >>> import gated_sae_layers as gsl
        >>> gsl.build_topk_sae(8, 32, k=4).architecture["name"]
        'topk'
        """
        return self._architecture

    @architecture.setter
    def architecture(self, value):
        object.__setattr__(self, "_architecture", check_architecture(value))

    @property
    def input_dim(self):
        """The width of the activations the encoder reads (`x`)."""
        if self.target is None and len(self.inputs) == 1:
            width = tuple(self.inputs[0].shape)
            if len(width) == 2 and width[-1] is not None:
                return int(width[-1])
        return self.decoder.output_dim

    @property
    def output_dim(self):
        """The width of the reconstruction: `input_dim` for an SAE, the target's
        width for a transcoder."""
        return self.decoder.output_dim

    @property
    def is_transcoder(self):
        """Whether the model predicts a target `y` other than its input (`fit(x, y)`).

        True for the models of `build_transcoder` (their `architecture`
        record holds `output_dim`) and for any model whose input and output
        widths differ or that has a `SkipConnection`.
        """
        from gated_sae_layers.layers.skip_connection import SkipConnection

        if self.target is not None:
            return False
        record = self.architecture or {}
        return ("output_dim" in record.get("arguments", {})
                or self.input_dim != self.output_dim
                or any(isinstance(layer, SkipConnection) for layer in sublayers(self)))

    @property
    def latent_dim(self):
        return self.decoder.latent_dim

    def sparsity_penalties(self):
        """The loss terms that are the sparsity term (`is_sparsity_term`).

        `SparsityPenalty` (gated), `L1Penalty` (ReLU) and `L0Penalty`
        (JumpReLU) declare themselves so; `set_sparsity_coefficient`,
        `SparsityWarmup` and the resampler act on these.
        """
        return [loss for loss in self.loss_terms.values()
                if getattr(loss, "is_sparsity_term", False)]

    def _sparsity_penalties_or_raise(self):
        penalties = self.sparsity_penalties()
        if not penalties:
            raise ValueError(
                f"Model '{self.name}' has no sparsity term (a loss with "
                "`is_sparsity_term = True`, such as `SparsityPenalty`).")
        return penalties

    def set_sparsity_coefficient(self, value):
        """Sets every sparsity term's coefficient; the next step uses it."""
        value = check_non_negative_float(value, "value")
        for loss in self._sparsity_penalties_or_raise():
            loss.coefficient.assign(value)

    @property
    def sparsity_coefficient(self):
        """The current coefficient of the (first) sparsity term."""
        penalties = self._sparsity_penalties_or_raise()
        return float(ops.convert_to_numpy(penalties[0].coefficient))

    def initialize_decoder_bias(self, data, method="geometric_median",
                                sample_rows=65536, seed=0):
        """Sets `b_dec` to the center of `data`, so `x - b_dec` starts centered.

        Call it before `fit`, on the activations you will train on (scaled,
        if you scale them; a transcoder's targets `y`, since `b_dec` is in
        the output space). `method` is `"geometric_median"` (default, robust
        to outlying rows, as Bricken et al. 2023) or `"mean"`; at most
        `sample_rows` random rows are used (`estimate_center`). Returns the
        center, `(input_dim,)`.

        Example:

        >>> import numpy as np
        >>> import gated_sae_layers as gsl
        >>> sae = gsl.build_gated_sae(2, 8, sparsity_coefficient=1e-3)
        >>> x = np.array([[0, 0], [1, 0], [0, 1], [100, 100]], "float32")
        >>> np.round(sae.initialize_decoder_bias(x), 2).tolist()
        [0.5, 0.5]
        """
        return inference.initialize_decoder_bias(self, data, method, sample_rows, seed)

    @property
    def learning_rate_multipliers(self):
        """`{variable path: multiplier}`: the variables `compile` makes the
        optimizer step that many times as far (empty: none)."""
        return dict(self._learning_rate_multipliers)

    @learning_rate_multipliers.setter
    def learning_rate_multipliers(self, value):
        value = learning_rates.check_multipliers(value)
        learning_rates.scaled_variables(self, value)      # every path exists
        object.__setattr__(self, "_learning_rate_multipliers", value)
        if getattr(self, "optimizer", None) is not None:
            learning_rates.apply_multipliers(self.optimizer, self, value)

    # ------------------------------------------------------------ training
    def compile(self, *args, sparse="auto", sparse_cap=None, sparse_kernels="auto",
                **kwargs):
        """`keras.Model.compile`, plus the choice of the sparse training path.

        Takes the arguments of `keras.Model.compile` but `loss` and
        `metrics` (the model carries its own), plus:

        Args:
            sparse: `"auto"` (default), `True` or `False`. The sparse path
                computes each step on the latents that fire instead of all
                `latent_dim` of them: one dense matmul (the encoder's
                forward), the rest gathers and scatter-adds over a few slots
                per row. Its results equal the dense step's to float
                rounding (`docs/sparse_training.md`). `"auto"` takes it where
                it was measured faster (on a CPU, JAX or TensorFlow with
                `jit_compile=True`, `latent_dim >= 1024` for TopK and 2048
                for the others), `True` raises a
                `ValueError` saying why where it cannot run, `False` keeps
                the dense step. `model.sparse_path_reason` says what was
                chosen and why.
            sparse_cap: `None` or int >= 1, the slots per row for the
                encoders whose number of active latents varies (gated,
                ReLU, JumpReLU, BatchTopK). A batch with a row above it
                trains with the dense step (logged as `sparse_fallbacks`).
                `None` measures it on the data at the start of `fit` and
                adapts it every epoch.
            sparse_kernels: `"auto"` (default), `"numba"` or `"xla"`: how the
                sparse step runs its top-k, gathers and scatter-adds. `"numba"`
                runs them as compiled loops over every core (JAX on a CPU,
                with Numba installed: `pip install gated-sae-layers[jax]`),
                called from the compiled step through XLA's FFI; `"xla"` as
                `keras.ops` loops, which XLA runs on one thread. `"auto"`
                takes Numba wherever it can run.
        """
        for name in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"SparseAutoencoder carries its own loss terms and metrics: "
                    f"pass them as `loss_terms=`/`metric_terms=` when building "
                    f"the model, not `{name}=` to compile(). Received: "
                    f"{name}={kwargs[name]!r}"
                )
        sparse, sparse_cap, sparse_kernels = sparse_plan.check_option(
            sparse, sparse_cap, sparse_kernels)
        self.caches.device_resident_runners = {}
        if "steps_per_execution" in kwargs:
            kwargs["steps_per_execution"] = check_steps_per_execution(
                kwargs["steps_per_execution"])
        super().compile(*args, **kwargs)
        learning_rates.apply_multipliers(
            self.optimizer, self, self._learning_rate_multipliers)
        plan, reason = sparse_plan.resolve(self, sparse, sparse_cap, self.jit_compile,
                                           sparse_kernels)
        object.__setattr__(self, "_sparse_plan", plan)
        object.__setattr__(self, "_sparse_path_reason", reason)
        # Kept out of Keras's tracking (not saved with the model); `metrics`
        # lists it while a plan that logs it is active.
        object.__setattr__(self, "_sparse_stats", (
            sparse_plan.SparsePathStats()
            if plan is not None and not plan.fixed else None))

    @property
    def sparse_plan(self):
        """The `SparsePlan` the compiled step trains with, or `None` (dense)."""
        return getattr(self, "_sparse_plan", None)

    @property
    def sparse_path_reason(self):
        """Why the model trains on the sparse path or not (set by `compile`)."""
        return getattr(self, "_sparse_path_reason", "the model is not compiled")

    @property
    def sparse_path_stats(self):
        """The `SparsePathStats` metric while a data-dependent sparse plan is active."""
        return getattr(self, "_sparse_stats", None)

    @property
    def metrics(self):
        """Keras's metrics, plus `sparse_path_stats` while it is active."""
        metrics = super().metrics
        stats = self.sparse_path_stats
        return metrics if stats is None else metrics + [stats]

    def compile_from_config(self, config):
        """Recompiles a loaded model, so its optimizer state comes back too."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def train_step(self, *args):
        """Keras's step, skipping the update when it is not finite.

        See `models/_fit/finite_step.py`: a step whose loss or a gradient is NaN/Inf
        changes no weight, and `fit` then raises a `ValueError`.
        """
        if keras.backend.backend() == "jax":
            return finite_step.jax_train_step(self, *args)
        if keras.backend.backend() == "tensorflow":
            return finite_step.tensorflow_train_step(self, *args)
        return super().train_step(*args)

    def _target(self, x, y, y_pred):
        if self.target is not None:
            return ops.stop_gradient(y_pred[self.target])
        return x if y is None else y

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        # Under tf.distribute each replica returns its share of the global
        # loss and the replicas' gradients are summed: a Keras `Loss` with a
        # mean reduction already divides by the replicas, the regularization
        # losses (whole on every replica) are divided here, and the logs get
        # the global values back. On JAX (`keras.distribution`) one program
        # sees the global batch and `replicas` is 1.
        from gated_sae_layers import distribution

        input_rule.reject_sample_weight(sample_weight)
        distribution.check_jit_compile(self.jit_compile)
        replicas = distribution.num_replicas_in_sync()
        target = self._target(x, y, y_pred)
        batch_size = ops.shape(target)[0]
        total = 0.0
        for tracker, (name, loss) in zip(
                self._term_trackers, self.loss_terms.items()):
            value = loss(target, y_pred[name], sample_weight=sample_weight)
            tracker.update_state(value * replicas if replicas > 1 else value,
                                 sample_weight=batch_size)
            total = total + value
        for regularization in self.losses:
            total = total + ops.cast(regularization, "float32") / replicas
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the metric terms and returns every metric's result.

        `y_pred=None` (the sparse path, which updated them itself) only
        reads the results.
        """
        from gated_sae_layers import distribution

        if y_pred is not None:
            self.update_metric_terms(x, y, y_pred, sample_weight)
        # Per-batch logs of the global batch, not of one replica's share.
        return distribution.read_across_replicas(self.get_metrics_result)

    def update_metric_terms(self, x, y, y_pred, sample_weight=None):
        """Updates every metric of `metric_terms` with its output of `y_pred`."""
        target = self._target(x, y, y_pred)
        for name, metrics in self.metric_terms.items():
            for metric in metrics:
                metric.update_state(target, y_pred[name], sample_weight)

    # ------------------------------------------------------------ inference
    def encode(self, x, batch_size=1024):
        """The latents `f(x)` of the rows of `x`, `(num_rows, latent_dim)`.

        In-memory arrays are checked as in `fit` (NaN/Inf rows raise) and
        encoded `batch_size` rows at a time, without computing the decoder;
        a symbolic tensor (inside another Functional model, or traced) gives
        the symbolic latents.

        Example:

        >>> import numpy as np
        >>> import gated_sae_layers as gsl
        >>> sae = gsl.build_gated_sae(8, 32, sparsity_coefficient=1e-3)
        >>> sae.encode(np.ones((3, 8), "float32")).shape
        (3, 32)
        """
        return inference.encode_rows(self, x, batch_size)

    def decode(self, latents, batch_size=1024):
        """The reconstruction `f W_dec + b_dec` of latents, `(num_rows, input_dim)`.

        In-memory arrays must be 2-D, `latent_dim` wide, floating and finite;
        a symbolic tensor gives the symbolic reconstruction.
        """
        return inference.decode_rows(self, latents, batch_size)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`; NaN/Inf rows raise, as in `fit`.

        A NaN row would otherwise come out as all-zero latents (the gate
        `NaN > 0` is false) and the decoder bias: indistinguishable from an
        input on which nothing fires.
        """
        x = input_rule.check_model_data(self, x, "x")
        with input_rule.readable_errors():
            return super().predict(x, *args, **kwargs)

    def fit(self, x=None, y=None, *args, validation_data=None,
            device_resident="auto", device_chunk_rows=None, **kwargs):
        """`keras.Model.fit`, with a device-resident fast path on JAX.

        Takes every argument of `keras.Model.fit`, plus:

        Args:
            x: also an `ActivationStore`: streamed to the device shard by
                shard on JAX, through `store_dataset` otherwise.
            device_resident: `"auto"` (default), `True` or `False`. On the
                JAX backend, in-memory activations (numpy or JAX arrays, no
                `y`/`sample_weight`) or an `ActivationStore` train with the
                data on the device,
                shuffled there, several steps per dispatch and NaN/Inf
                checked there (`models/_fit/device_resident.py`). `"auto"` takes
                that path wherever it applies, `True` raises a `ValueError`
                saying why where it does not, `False` always uses the stock
                Keras loop.
            device_chunk_rows: rows uploaded to the device at a time on that
                path; default: as many as fit in a quarter of the free
                device memory (1 GiB worth on a CPU).
        """
        return run_fit(self, super().fit, x, y, args, kwargs, validation_data,
                       device_resident, device_chunk_rows)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        input_rule.reject_sample_weight(kwargs.get("sample_weight"))
        input_rule.check_targets(self, x, y)
        x = input_rule.check_model_data(self, x, "x")
        y = input_rule.check_model_data(self, y, "y", targets=True)
        with input_rule.readable_errors():
            return super().evaluate(x, y, *args, **kwargs)

    # ------------------------------------------------------- serialization
    def get_config(self):
        config = super().get_config()
        config.update(serialize_terms(self.loss_terms, self.metric_terms))
        config["target"] = self.target
        config["normalization_scale"] = self.normalization_scale
        config["architecture"] = self.architecture
        if self._learning_rate_multipliers:
            config["learning_rate_multipliers"] = {
                path: learning_rates.serialize_multiplier(multiplier)
                for path, multiplier in self._learning_rate_multipliers.items()}
        return config
