"""`save_sae` and `load_sae`: SAELens 6.x folders, both ways; safetensors only.

A SAELens folder holds `cfg.json` and `sae_weights.safetensors` (and
optionally `sparsity.safetensors`, the tensor `sparsity` of shape `(d_sae,)`:
`log10(feature density + 1e-10)`). Checked against sae-lens 6.x
(`sae_lens/saes/*.py`, `sae_lens/constants.py`,
`sae_lens/loading/pretrained_sae_loaders.py`).
"""

import json

import numpy as np

from gated_sae_layers.interop import _architectures, _checks, _safetensors, _transcoders

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
SPARSITY_FILENAME = "sparsity.safetensors"
SPARSIFY_WEIGHTS_FILENAME = "sae.safetensors"
DICTIONARY_LEARNING_WEIGHTS_FILENAME = "ae.safetensors"
SAE_FILES = (CFG_FILENAME, WEIGHTS_FILENAME, SPARSITY_FILENAME)
"""The files `save_sae` writes (`overwrite` is needed to replace them)."""
SAE_LENS_FORMAT_VERSION = "6.0.0"
"""The `metadata.sae_lens_version` written: the 6.x config layout (SAELens
converts configs older than 6.0 on load, and leaves 6.x ones as they are)."""

# The SAELens architectures a folder can have, from the `Architecture` records,
# and the SAELens transcoders of those.
_SAELENS_ARCHITECTURES = _architectures.saelens_architectures() + tuple(
    name for (sae, _), name in _transcoders.SAELENS_TRANSCODERS.items()
    if sae in _architectures.saelens_architectures())
_DEFAULT_METADATA = {"model_name": None, "hook_name": None, "context_size": None,
                     "prepend_bos": True}


def save_sae(model, folder, *, metadata=None, feature_density=None, dtype="float32",
             overwrite=False):
    """Writes `model` as a SAELens 6.x folder that `SAE.load_from_disk` reads.

    The export takes raw activations: a `normalization_scale` is folded in
    first (`fold_normalization`; `cfg.json` says `normalize_activations:
    "none"`). Decoder rows that are not unit norm (a ReLU SAE trained with
    `weight_by_decoder_norm=True`, or a folded scale) are made unit norm, the
    norms going into the encoder (`W_enc * n`, `b_enc * n`, `W_dec / n`), so
    dashboards see unit directions and every reconstruction is unchanged.
    BatchTopK and Matryoshka SAEs export as `jumprelu` with their learned
    inference threshold, the same for every latent. Our architecture, training
    hyperparameters and version go under `metadata["gated_sae_layers"]`, so
    `load_sae` rebuilds the same model.

    A transcoder (`build_transcoder`) writes the SAELens transcoder of its
    encoder, which `SAE.load_from_disk` reads as `Transcoder` (ReLU),
    `SkipTranscoder` (ReLU, `skip=True`), `JumpReLUTranscoder` or
    `JumpReLUSkipTranscoder` (JumpReLU, and BatchTopK and Matryoshka with
    their inference threshold): `cfg.json` gets `d_out` and
    `apply_b_dec_to_input: false` (the encoder reads `x` uncentered),
    `sae_weights.safetensors` `W_dec` `(d_sae, d_out)`, `b_dec` `(d_out,)`
    and `W_skip` `(d_out, d_in)` (our skip's kernel, transposed). A
    `normalization_scale` is folded as `fold_normalization` folds it (`x`
    and `y` scaled by the same factor). SAELens has no TopK or gated
    transcoder: those raise `TypeError`.

    Args:
        model: a `SparseAutoencoder` from `build_sae` (any architecture) or
            `build_transcoder` (ReLU, JumpReLU, BatchTopK, Matryoshka).
        folder: the folder to write; created if needed. Other files in it
            are left alone.
        metadata: optional dict for `cfg.json`'s `metadata`, such as
            `model_name`, `hook_name`, `context_size`, `prepend_bos`,
            `dataset_path`; JSON values only.
        feature_density: optional `(latent_dim,)` firing frequencies in
            [0, 1] (`gsl.feature_density`); written to `sparsity.safetensors`.
        dtype: the stored dtype: `"float32"`, `"bfloat16"`, `"float16"` or
            `"float64"`. A weight it cannot hold (float16 ends at 65504)
            raises `ValueError`, naming the tensor, before anything is
            written.
        overwrite: bool. A folder that already holds an SAE (`cfg.json`,
            `sae_weights.safetensors` or `sparsity.safetensors`) raises
            `FileExistsError` unless `True`; then its files are replaced
            all or nothing: every new file is written whole into a hidden
            temporary folder first, then the old ones are moved out and the
            new ones in, and a failure at any step puts the old ones back.
            A `sparsity.safetensors` this export does not write is deleted
            with the others, as it described the replaced SAE: it never
            stays beside new weights. A folder named like one of these
            files is never replaced (`FileExistsError`).

    Returns:
        The folder, a `pathlib.Path`.

    Example:

    >>> import tempfile
    >>> import gated_sae_layers as gsl
    >>> model = gsl.build_sae("topk", 8, 16, k=4)
    >>> folder = save_sae(model, tempfile.mkdtemp(), metadata={"hook_name": "h"})
    >>> sorted(path.name for path in folder.iterdir())
    ['cfg.json', 'sae_weights.safetensors']
    >>> type(load_sae(folder).encoder).__name__
    'TopKEncoder'
    """
    if dtype not in _checks.EXPORT_DTYPES:
        raise ValueError(f"`dtype` must be one of {list(_checks.EXPORT_DTYPES)}. "
                         f"Received: dtype={dtype!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be True or False. Received: "
                        f"overwrite={overwrite!r}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"`metadata` must be a dict or None. Received: metadata of "
                        f"type {type(metadata).__name__}")
    metadata = dict(metadata or {})
    if "gated_sae_layers" in metadata:
        raise ValueError("`metadata` must not set the key 'gated_sae_layers'; "
                         "save_sae writes it.")
    safetensors_numpy = _checks.import_safetensors_numpy()
    architecture, tensors, info = _architectures.export_tensors(model)
    d_in, d_sae = tensors["W_enc"].shape
    transcoder = _transcoders.split(architecture)[1] is not None
    files = {}
    if feature_density is not None:
        density = np.asarray(feature_density, dtype="float64")
        if (density.shape != (d_sae,) or not np.all(np.isfinite(density))
                or np.any(density < 0) or np.any(density > 1)):
            raise ValueError(
                f"`feature_density` must hold {d_sae} firing frequencies in [0, 1], "
                f"one per latent. Received: an array of shape {density.shape}")
        files[SPARSITY_FILENAME] = safetensors_numpy.save(
            {"sparsity": np.log10(density + 1e-10).astype("float32")})
    from gated_sae_layers._version import __version__

    info["version"] = __version__
    cfg = {"architecture": architecture, "d_in": int(d_in), "d_sae": int(d_sae),
           "dtype": dtype, "device": "cpu", "apply_b_dec_to_input": not transcoder,
           "normalize_activations": "none", "reshape_activations": "none"}
    if transcoder:
        cfg["d_out"] = int(tensors["W_dec"].shape[1])
    if architecture == "topk":
        cfg.update(k=int(info["hyperparameters"]["k"]),
                   rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {**_DEFAULT_METADATA, **metadata,
                       "sae_lens_version": SAE_LENS_FORMAT_VERSION,
                       "sae_lens_training_version": SAE_LENS_FORMAT_VERSION,
                       "gated_sae_layers": info}
    try:
        cfg_text = json.dumps(cfg, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`metadata` must hold JSON values only ({error}).") from None
    files[WEIGHTS_FILENAME] = safetensors_numpy.save(
        _stored_tensors(tensors, dtype), metadata={"format": "pt"})
    files[CFG_FILENAME] = cfg_text.encode("utf-8")
    folder = _checks.check_folder_for_writing(folder, SAE_FILES, overwrite)
    _checks.write_folder(folder, files, stale=SAE_FILES)
    return folder


def _stored_tensors(tensors, dtype):
    """`tensors` cast to `dtype`; raises if one does not fit (float16 ends at
    65504), naming the tensor and its largest magnitude."""
    import ml_dtypes

    stored = _checks.numpy_dtype(dtype)
    cast = {}
    for name, value in tensors.items():
        with np.errstate(over="ignore"):
            cast[name] = np.ascontiguousarray(value.astype(stored))
        if not np.all(np.isfinite(cast[name])):
            wider = "float32 or bfloat16" if dtype == "float16" else "float64"
            raise ValueError(
                f"`dtype={dtype!r}` cannot hold tensor {name!r}: its largest magnitude "
                f"is {np.max(np.abs(value)):.3g}, beyond {dtype}'s "
                f"{float(ml_dtypes.finfo(stored).max):.6g}. Export as {wider}. "
                f"Received: dtype={dtype!r}")
    return cast


def read_saelens_folder(folder):
    """Reads and checks a SAELens folder; builds nothing.

    Returns:
        `(cfg, architecture, tensors, sparsity)`: the config dict, the
        SAELens architecture, the float64 tensors in the
        `apply_b_dec_to_input` form with unscaled decoder (see
        `_architectures`; a transcoder's as SAELens holds them, its encoder
        reading `x` uncentered), and the `sparsity` array or None.
    """
    folder = _checks.check_folder(folder)
    cfg_path = folder / CFG_FILENAME
    cfg = _checks.read_json_object(folder, CFG_FILENAME)
    architecture = _checks.cfg_choice(cfg, "architecture", cfg_path,
                                      _SAELENS_ARCHITECTURES)
    transcoder = _transcoders.split(architecture)[1] is not None
    d_in = _checks.cfg_int(cfg, "d_in", cfg_path)
    d_sae = _checks.cfg_int(cfg, "d_sae", cfg_path)
    d_out = _checks.cfg_int(cfg, "d_out", cfg_path) if transcoder else None
    _checks.cfg_choice(cfg, "dtype", cfg_path, _checks.EXPORT_DTYPES + tuple(
        f"torch.{name}" for name in _checks.EXPORT_DTYPES), default="float32")
    # SAELens' inference SAE leaves "expected_average_only_in" inputs as they are.
    _checks.cfg_choice(cfg, "normalize_activations", cfg_path,
                       ("none", "expected_average_only_in"), default="none")
    _checks.cfg_choice(cfg, "reshape_activations", cfg_path, ("none", "hook_z"),
                       default="none")
    apply_b_dec = _checks.cfg_bool(cfg, "apply_b_dec_to_input", cfg_path,
                                   not transcoder)
    if transcoder and apply_b_dec:
        raise ValueError(
            f"{cfg_path}: `apply_b_dec_to_input` is true for a SAELens {architecture}; "
            "a transcoder's encoder reads `x` uncentered (`b_dec` is in the output "
            "space) and SAELens's `TranscoderConfig` refuses true. Set it to false. "
            "Received: apply_b_dec_to_input=True")
    rescale = False
    if architecture == "topk":
        k = _checks.cfg_int(cfg, "k", cfg_path)
        if k > d_sae:
            raise ValueError(f"{cfg_path}: `k` must be <= d_sae={d_sae}. Received: k={k}")
        rescale = _checks.cfg_bool(cfg, "rescale_acts_by_decoder_norm", cfg_path, False)
    metadata = cfg.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{cfg_path}: `metadata` must be a JSON object.")
    weights_path = folder / WEIGHTS_FILENAME
    shapes = _architectures.expected_shapes(architecture, d_in, d_sae, d_out)
    tensors = _checks.check_tensors(
        _safetensors.read_safetensors(folder, WEIGHTS_FILENAME, shapes), shapes, weights_path)
    sparsity = None
    if (folder / SPARSITY_FILENAME).exists() or (folder / SPARSITY_FILENAME).is_symlink():
        shapes = {"sparsity": (d_sae,)}
        sparsity = _checks.check_tensors(
            _safetensors.read_safetensors(folder, SPARSITY_FILENAME, shapes), shapes,
            folder / SPARSITY_FILENAME)["sparsity"]
    if not (apply_b_dec or transcoder):
        # x @ W + b == (x - b_dec) @ W + (b + b_dec @ W)
        shift = tensors["b_dec"] @ tensors["W_enc"]
        if architecture == "gated":
            tensors["b_gate"] = tensors["b_gate"] + shift
            tensors["b_mag"] = tensors["b_mag"] + shift * np.exp(tensors["r_mag"])
        else:
            tensors["b_enc"] = tensors["b_enc"] + shift
    if rescale:   # TopK on hidden_pre * |W_dec_i|, decoding f_i / |W_dec_i|
        if np.min(np.linalg.norm(tensors["W_dec"], axis=1)) <= 0:
            raise ValueError(f"{weights_path}: `rescale_acts_by_decoder_norm` with a "
                             "zero decoder row (SAELens divides by its norm).")
        _architectures.fold_decoder_norms(tensors, architecture)
    return cfg, architecture, tensors, sparsity


def load_sae(folder):
    """Loads a SAELens, sparsify or converted dictionary_learning folder as our SAE.

    The folder's format is read from its weights file: `sae_weights.safetensors`
    (SAELens 6.x; `standard`, `gated`, `jumprelu`, `topk`, and the
    transcoders `transcoder`, `skip_transcoder`, `jumprelu_transcoder`,
    `jumprelu_skip_transcoder`), `sae.safetensors` (sparsify SAEs and
    transcoders, see `load_sparsify`) or `ae.safetensors`
    (dictionary_learning converted with the recipe of `docs/interop.md`,
    see `load_dictionary_learning`). Safetensors only: no pickle is read.

    Everything is checked before a model is built, and a `ValueError` names
    the file and the problem: `cfg.json` must be a JSON object (at most 1 MiB,
    not nested too deeply to parse) with a known `architecture` and integer
    `d_in`/`d_sae`; the weights file's header must list exactly the
    architecture's tensors, of those shapes, floating, and the file must end
    with its last tensor (checked before any tensor is read, so a padded or
    sparse file costs no memory); the values must be finite, and stay finite
    once cast to the model's float32 (1e300 in a float64 file is refused,
    naming the tensor).

    The result is an ordinary `SparseAutoencoder` built with `build_sae`
    (train it further, save it as `.keras`, splice it) that reproduces the
    source's latents and reconstructions in float32. `standard` loads as a
    ReLU SAE with `weight_by_decoder_norm=True` (SAELens' L1 penalty);
    `apply_b_dec_to_input: false` and TopK's `rescale_acts_by_decoder_norm`
    are folded into the weights (same outputs); a JumpReLU threshold <= 0
    becomes the smallest positive float32. A SAELens transcoder loads as our
    transcoder of the same encoder (`build_transcoder`: `output_dim` from
    `d_out`, `skip=True` for the skip ones, whose `W_skip` `(d_out, d_in)`
    becomes our skip's kernel transposed); its `cfg.json` needs an integer
    `d_out` and `apply_b_dec_to_input` false or absent. Folders written by
    `save_sae` come back as the architecture and hyperparameters they were
    saved from; others get a sparsity coefficient of 0: set it
    (`set_sparsity_coefficient`) before training further.

    Args:
        folder: the SAE folder.

    Returns:
        A `SparseAutoencoder`.
    """
    folder = _checks.check_folder(folder)
    if not (folder / WEIGHTS_FILENAME).exists():
        if (folder / SPARSIFY_WEIGHTS_FILENAME).exists():
            from gated_sae_layers.interop.sparsify import load_sparsify

            return load_sparsify(folder)
        if (folder / DICTIONARY_LEARNING_WEIGHTS_FILENAME).exists():
            from gated_sae_layers.interop.dictionary_learning import (
                load_dictionary_learning,
            )

            return load_dictionary_learning(folder)
        raise ValueError(
            f"{folder}: no {WEIGHTS_FILENAME} (SAELens), {SPARSIFY_WEIGHTS_FILENAME} "
            f"(sparsify) or {DICTIONARY_LEARNING_WEIGHTS_FILENAME} (dictionary_learning, "
            "converted) in this folder.")
    cfg, architecture, tensors, _ = read_saelens_folder(folder)
    info = cfg.get("metadata", {}).get("gated_sae_layers")
    ours, hyper = _architectures.choose_architecture(architecture, tensors, info,
                                                     cfg.get("d_out"))
    if ours == "topk":
        hyper["k"] = cfg["k"]
    model = _architectures.build_model(ours, hyper, tensors, cfg["d_in"],
                                       cfg["d_sae"], folder / CFG_FILENAME,
                                       folder / WEIGHTS_FILENAME)
    return model


def load_feature_density(folder):
    """The firing frequencies in a folder's `sparsity.safetensors`, or None.

    Returns:
        `(d_sae,)` float64 array `10 ** sparsity - 1e-10`, clipped to [0, 1].
    """
    _, _, _, sparsity = read_saelens_folder(folder)
    if sparsity is None:
        return None
    return np.clip(10.0 ** sparsity - 1e-10, 0.0, 1.0)
