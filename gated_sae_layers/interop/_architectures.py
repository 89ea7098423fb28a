"""Our SAE variants <-> the SAELens tensors, through one float64 dict.

The dict holds the SAELens 6.x inference tensors with `apply_b_dec_to_input`
true: `f = act((x - b_dec) @ W_enc + b)`, `x_hat = f @ W_dec + b_dec`, with
`W_enc` `(d_in, d_sae)` and `W_dec` `(d_sae, d_in)`:

| SAELens `architecture` | tensors besides `W_enc`, `W_dec`, `b_dec` | ours |
| --- | --- | --- |
| `standard` | `b_enc` | `relu` |
| `gated` | `b_gate`, `b_mag`, `r_mag` (magnitude `W_enc * exp(r_mag)`) | `gated` |
| `jumprelu` | `b_enc`, `threshold` (raw, not log) | `jumprelu`; `batch_topk` and `matryoshka` with their constant inference threshold |
| `topk` | `b_enc` (and `k` in the config) | `topk` |

A transcoder's dict holds the tensors of its SAELens transcoder (`_transcoders`):
those of its SAE architecture, with `W_dec` `(d_sae, d_out)`, `b_dec` `(d_out,)`,
an uncentered encoder, and SAELens's `W_skip` `(d_out, d_in)` for a skip transcoder.

Which variant exports as which SAELens architecture, and which loads a
folder without our metadata, is read from each variant's `Architecture`
record (`gsl.ARCHITECTURES`: `saelens`, `saelens_defaults`); how its
encoder's variables become tensors, from the codec its record names
(`saelens_tensors`, one of `TENSOR_CODECS`). A model's own record
(`model.architecture`, set by its builder) says which variant it is; a model
saved before the record existed is recognized from its layers.
"""

import warnings

import numpy as np
from keras import ops

from gated_sae_layers._keras_compat import sublayers
from gated_sae_layers.interop import _transcoders
from gated_sae_layers.interop._checks import numpy_dtype
from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.decoder_norm_weighting import DecoderNormWeighting
from gated_sae_layers.layers.gated_encoder import GatedEncoder
from gated_sae_layers.layers.jumprelu_encoder import JumpReLUEncoder
from gated_sae_layers.layers.prefix_mask import PrefixMask
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.losses import AuxKLoss, AuxReconstruction
from gated_sae_layers.models.builders import ARCHITECTURES, build_sae, build_transcoder
from gated_sae_layers.models.folding import fold_normalization
from gated_sae_layers.models.sparse_autoencoder import SparseAutoencoder



def _gated_variables(encoder):
    return {"W_enc": encoder.input_kernel, "b_gate": encoder.gate_bias,
            "b_mag": encoder.magnitude_bias, "r_mag": encoder.magnitude_log_scale}


def _affine_variables(encoder):
    return {"W_enc": encoder.input_kernel, "b_enc": encoder.bias}


# The tensor codecs an `Architecture` record names (`saelens_tensors`):
# `(variables, threshold)`. `variables(encoder)` gives the SAELens tensors
# written as they are (`W_dec`, `b_dec` come from the decoder); `threshold`
# says where `threshold` comes from: None (no threshold), "learned" (a
# JumpReLU's per-latent `learned_threshold`, written back through
# `log_threshold`) or "constant" (a BatchTopK's one `inference_threshold`).
TENSOR_CODECS = {
    "gated": (_gated_variables, None),
    "affine": (_affine_variables, None),
    "learned_threshold": (_affine_variables, "learned"),
    "batch_threshold": (_affine_variables, "constant"),
}


def saelens_architectures():
    """The SAELens architectures a folder can have: those a record loads by default."""
    return tuple(dict.fromkeys(
        record.saelens for record in ARCHITECTURES.values()
        if record.saelens is not None and record.saelens_defaults is not None))


def _codec(name):
    return TENSOR_CODECS[ARCHITECTURES[name].saelens_tensors]
UNIT_NORM_TOLERANCE = 1e-2
"""Rows whose norms are within 1% of 1 count as unit norm (a bfloat16 round trip
moves them by about 0.2%): neither folded on export nor warned about on import."""


def expected_shapes(architecture, d_in, d_sae, d_out=None):
    """`{name: shape}` of every tensor a SAELens folder of `architecture` holds
    (a transcoder's, such as `"skip_transcoder"`, with its `d_out`)."""
    architecture, skip = _transcoders.split(architecture)
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if architecture == "gated":
        shapes.update(b_gate=(d_sae,), b_mag=(d_sae,), r_mag=(d_sae,))
    else:
        shapes["b_enc"] = (d_sae,)
    if architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    if skip is not None:
        shapes.update(_transcoders.transcoder_shapes(d_in, d_sae, d_out, skip))
    return shapes


def _coefficient(model, loss_class):
    for loss in model.loss_terms.values():
        if isinstance(loss, loss_class):
            return float(ops.convert_to_numpy(loss.coefficient))
    return None


def describe(model):
    """`(architecture, hyperparameters)`: the `build_sae` call that rebuilds `model`.

    Read from the model's record (`model.architecture`, set by its builder),
    with the current sparsity coefficient; a model without one (saved before
    the record existed) is recognized from its layers. A transcoder's
    hyperparameters hold its `output_dim` and `skip` (`build_transcoder`).
    """
    if not isinstance(model, SparseAutoencoder):
        raise TypeError("`model` must be a `SparseAutoencoder` (from `build_sae`). "
                        f"Received: model of type {type(model).__name__}")
    if model.architecture is None:
        name, hyper = _infer_architecture(model)
    else:
        name, hyper = _recorded_architecture(model)
    if model.is_transcoder:
        hyper.update(output_dim=model.output_dim,
                     skip=_transcoders.skip_layer(model) is not None)
    return name, hyper


def _recorded_architecture(model):
    """`describe` for a model with its `architecture` record."""
    name = model.architecture["name"]
    record = ARCHITECTURES.get(name)
    if record is None or record.saelens is None:
        raise TypeError(
            f"Cannot export a {name!r} SAE: the SAELens format has the architectures "
            f"whose `Architecture` record names one ({_exportable()}).")
    if not isinstance(model.encoder, record.encoder):
        raise TypeError(
            f"The model records the architecture {name!r}, whose encoder is a "
            f"{record.encoder.__name__}, but its encoder is a "
            f"{type(model.encoder).__name__}: the record does not describe it.")
    hyper = dict(model.architecture["arguments"])
    if "sparsity_coefficient" in hyper and model.sparsity_penalties():
        hyper["sparsity_coefficient"] = model.sparsity_coefficient   # current value
    return name, hyper


def _exportable():
    return ", ".join(name for name, record in ARCHITECTURES.items() if record.saelens)


def _infer_architecture(model):
    """`describe` for a model without `architecture`: the variant from its layers."""
    encoder = model.encoder
    hyper = {}
    if model.sparsity_penalties():
        hyper["sparsity_coefficient"] = model.sparsity_coefficient
    if isinstance(encoder, GatedEncoder):
        architecture = "gated"
        hyper["remove_parallel_gradient"] = bool(model.decoder.remove_parallel_gradient)
        aux = _coefficient(model, AuxReconstruction)
        if aux is not None:
            hyper["aux_coefficient"] = aux
    elif isinstance(encoder, JumpReLUEncoder):
        architecture = "jumprelu"
        hyper.update(initial_threshold=encoder.initial_threshold,
                     bandwidth=encoder.bandwidth)
    elif isinstance(encoder, (TopKEncoder, BatchTopKEncoder)):
        hyper.update(k=encoder.k, k_aux=encoder.k_aux,
                     dead_steps_threshold=encoder.dead_steps_threshold)
        aux = _coefficient(model, AuxKLoss)
        if aux is not None:
            hyper["aux_coefficient"] = aux
        architecture = "topk"
        if isinstance(encoder, BatchTopKEncoder):
            prefixes = sorted(layer.size for layer in sublayers(model)
                              if isinstance(layer, PrefixMask))
            if prefixes:   # build_matryoshka_sae keeps the default momentum
                architecture = "matryoshka"
                hyper["prefix_sizes"] = prefixes
            else:
                architecture = "batch_topk"
                hyper["threshold_momentum"] = encoder.threshold_momentum
    elif isinstance(encoder, ReLUEncoder):
        architecture = "relu"
        hyper["weight_by_decoder_norm"] = any(
            isinstance(layer, DecoderNormWeighting) for layer in sublayers(model))
    else:
        raise TypeError(
            f"Cannot export an SAE with a {type(encoder).__name__}: the SAELens format "
            "has gated, ReLU (standard), JumpReLU and TopK encoders (BatchTopK and "
            "Matryoshka export as JumpReLU).")
    return architecture, hyper


def _numpy(variable):
    return np.asarray(ops.convert_to_numpy(variable), dtype="float64")


def fold_decoder_norms(tensors, architecture, uniform_only=False):
    """Divides `W_dec`'s rows by their norms, scaling the encoder to match.

    Latent `i` becomes `f_i * n_i` and decodes through `W_dec_i / n_i`, so
    every reconstruction is unchanged (the pre-activation, biases and
    threshold of each latent scale by `n_i > 0`; a skip transcoder's
    `W_skip` is untouched). With `uniform_only` (TopK, whose selection
    compares latents) only one common norm is folded.

    Returns:
        True if the norms were folded, False if rows were already unit norm
        (or, with `uniform_only`, not all of one norm).
    """
    norms = np.linalg.norm(tensors["W_dec"], axis=1)
    if np.max(np.abs(norms - 1.0)) <= UNIT_NORM_TOLERANCE:
        return False
    if np.min(norms) <= 0.0:
        return False  # a zero row has no direction; keep the weights as they are
    if uniform_only:
        if np.max(norms) - np.min(norms) > UNIT_NORM_TOLERANCE * np.max(norms):
            return False
        norms = np.full_like(norms, np.mean(norms))
    tensors["W_enc"] = tensors["W_enc"] * norms[None, :]
    tensors["W_dec"] = tensors["W_dec"] / norms[:, None]
    for name in ("b_enc", "b_gate", "b_mag", "threshold"):
        if name in tensors:
            tensors[name] = tensors[name] * norms
    return True


def export_tensors(model):
    """The SAELens tensors of `model` (float64) and what the export did.

    Returns:
        `(saelens_architecture, tensors, info)`; `info` holds our
        `architecture`, `hyperparameters`, the folded `normalization_scale`
        (or None) and `decoder_norms_folded`.
    """
    architecture, hyper = describe(model)
    saelens = ARCHITECTURES[architecture].saelens
    if "output_dim" in hyper:
        saelens = _transcoders.saelens_name(architecture, hyper["skip"])
    scale = model.normalization_scale
    if scale is not None:
        model = fold_normalization(model)
    encoder, decoder = model.encoder, model.decoder
    variables, threshold_kind = _codec(architecture)
    tensors = {"W_dec": _numpy(decoder.kernel), "b_dec": _numpy(decoder.bias)}
    tensors.update({name: _numpy(variable)
                    for name, variable in variables(encoder).items()})
    if hyper.get("skip"):
        tensors["W_skip"] = _numpy(_transcoders.skip_layer(model).kernel).T
    if threshold_kind == "learned":
        tensors["threshold"] = _numpy(encoder.learned_threshold)
    elif threshold_kind == "constant":
        threshold = float(_numpy(encoder.inference_threshold))
        if not threshold > 0:
            kind = "transcoder" if "output_dim" in hyper else "SAE"
            raise ValueError(
                f"A {architecture} {kind} exports as JumpReLU with its learned inference "
                "threshold, but this model's threshold is "
                f"{threshold} (never trained). Train it with `fit` first; the "
                "threshold is estimated during training.")
        tensors["threshold"] = np.full(model.latent_dim, threshold)
    folded = fold_decoder_norms(tensors, saelens, uniform_only=saelens == "topk")
    for name, value in tensors.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"Cannot export: the model's `{name}` holds NaN or "
                             "infinite values.")
    info = {"architecture": architecture, "hyperparameters": hyper,
            "normalization_scale": scale, "decoder_norms_folded": folded}
    return saelens, tensors, info


def log_threshold_for(threshold):
    """`log_threshold` (float32) whose backend `exp` gives `threshold` back exactly.

    Searches a few float32 steps around `log(threshold)`; where none maps
    back exactly (small thresholds, where float32 `exp` skips values), the
    closest is kept.
    """
    target = np.maximum(threshold.astype("float32"), np.finfo("float32").tiny)
    start = np.log(target.astype("float64")).astype("float32")
    steps = [start]
    up = down = start
    for _ in range(8):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        steps += [up, down]
    candidates = np.stack(steps)
    errors = np.abs(ops.convert_to_numpy(ops.exp(candidates)).astype("float64")
                    - target.astype("float64"))
    return candidates[np.argmin(errors, axis=0), np.arange(target.shape[0])]


def choose_architecture(saelens, tensors, info, d_out=None):
    """Our architecture and builder arguments for a folder's tensors.

    Our own metadata (`info`, from `cfg.json`'s `metadata.gated_sae_layers`)
    is used when it fits the tensors: BatchTopK and Matryoshka come back from
    a constant JumpReLU threshold. Otherwise the SAELens default: `standard`
    -> ReLU weighting its L1 penalty by decoder norm (as SAELens trains it).
    A SAELens transcoder (`"skip_transcoder"`, ...) gets the choice of its
    SAE architecture, with `output_dim=d_out` and `skip` from the folder
    (never from the metadata: the folder says what it holds).
    """
    saelens, skip = _transcoders.split(saelens)
    ours = info.get("architecture") if isinstance(info, dict) else None
    hyper = info.get("hyperparameters") if isinstance(info, dict) else None
    record = ARCHITECTURES.get(ours) if isinstance(ours, str) else None
    fits = record is not None and record.saelens == saelens
    if fits and _codec(ours)[1] == "constant":
        threshold = tensors["threshold"]
        fits = threshold[0] > 0 and np.all(threshold == threshold[0])
    if fits and isinstance(hyper, dict):
        chosen = ours, dict(hyper)
    else:
        chosen = next(((record.name, dict(record.saelens_defaults))
                       for record in ARCHITECTURES.values()
                       if record.saelens == saelens
                       and record.saelens_defaults is not None), None)
    if chosen is None:
        raise ValueError(f"No architecture of the kit loads a SAELens {saelens!r} SAE.")
    hyper = chosen[1]
    hyper.pop("output_dim", None)
    hyper.pop("skip", None)
    if skip is not None:
        hyper.update(output_dim=d_out, skip=skip)
    return chosen


def _cast(tensors, variables, path):
    """`tensors` (float64) cast to the dtypes of their `variables`; raises a
    `ValueError` naming the tensor if a value does not fit there (1e300 is
    finite in float64, infinite in float32)."""
    cast = {}
    for name, value in tensors.items():
        dtype = str(variables[name].dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            cast[name] = value.astype(numpy_dtype(dtype))
        if not np.all(np.isfinite(cast[name])):
            raise ValueError(
                f"{path}: tensor {name!r} holds values beyond {dtype}'s range (largest "
                f"magnitude {np.max(np.abs(value)):.3g}); the model holds its weights "
                f"in {dtype}.")
    return cast


def build_model(ours, hyper, tensors, d_in, d_sae, source, weights_path):
    """Builds our SAE with `build_sae` and writes the float64 `tensors` into it.

    Each tensor is cast to its variable's dtype first, and must stay finite
    there (a `ValueError` names `weights_path` and the tensor); `source`, the
    config file, is named in the other errors and warnings. `hyper` with
    `output_dim` builds a transcoder (`build_transcoder`; `W_skip`, in
    SAELens's `(d_out, d_in)`, goes into its `SkipConnection` transposed).
    """
    hyper = dict(hyper)
    output_dim = hyper.pop("output_dim", None)
    kind = "SAE" if output_dim is None else "transcoder"
    try:
        if output_dim is None:
            model = build_sae(ours, d_in, d_sae, **hyper)
        else:
            model = build_transcoder(ours, d_in, output_dim, d_sae, **hyper)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: the saved hyperparameters do not build a {ours} "
                         f"{kind}: {error}") from None
    encoder, decoder = model.encoder, model.decoder
    encoder_variables, threshold_kind = _codec(ours)
    variables = {"W_dec": decoder.kernel, "b_dec": decoder.bias,
                 **encoder_variables(encoder)}
    if "W_skip" in tensors:
        variables["W_skip"] = _transcoders.skip_layer(model).kernel
        tensors = {**tensors, "W_skip": tensors["W_skip"].T}
    if threshold_kind == "learned":
        variables["threshold"] = encoder.log_threshold
    elif threshold_kind == "constant":
        variables["threshold"] = encoder.inference_threshold
    cast = _cast(tensors, variables, weights_path)
    for name, variable in variables.items():
        if name != "threshold":
            variable.assign(cast[name])
    if threshold_kind == "learned":
        encoder.log_threshold.assign(log_threshold_for(cast["threshold"]))
    elif threshold_kind == "constant":
        encoder.inference_threshold.assign(cast["threshold"][0])
    constrained = decoder.kernel_constraint is not None
    norms = np.linalg.norm(tensors["W_dec"], axis=1)
    if constrained and np.max(np.abs(norms - 1.0)) > UNIT_NORM_TOLERANCE:
        if isinstance(encoder, (TopKEncoder, BatchTopKEncoder)):
            advice = ("a k-budget encoder compares latents, so the norms cannot be "
                      "folded into it without changing which latents fire")
        else:
            advice = ("fold the norms first (SAELens `fold_W_dec_norm()`) to train "
                      "it further")
        warnings.warn(
            f"{source}: the decoder rows are not unit norm (norms from "
            f"{norms.min():.4g} to {norms.max():.4g}). The loaded {ours} {kind} "
            "reproduces the source's outputs, but its first training step "
            f"renormalizes the rows (`UnitNormRows`); {advice}.", stacklevel=3)
    return model
