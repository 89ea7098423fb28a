"""Shared by the opt-in proofs against the real peers (torch, SAELens, sparsify).

`tests/test_saelens_proof.py` (SAEs) and `tests/test_transcoder_proof.py`
(transcoders) draw their random models, compare them and write their
fixtures the same way; `tests/test_transcoder_interop.py` reads those
fixtures without torch (`quiet_load`). Nothing here imports torch on
import: the proofs import it first (`tests.torch_peers.import_torch`), or
skip without it.
"""

import os
import shutil
import warnings

import keras
import numpy as np
from keras import ops

from gated_sae_layers.interop import load_sae


def start_proof(tmp_path_factory, name, rows, width):
    """Seeds torch, Keras and numpy for one pass of a proof, in a fixed order.

    Args:
        tmp_path_factory: pytest's, for the pass's work folder.
        name: the work folder's name.
        rows, width: the shape of the inputs.

    Returns:
        `(rng, inputs, work, write_fixtures)`: the numpy generator of every
        random draw that follows, float32 inputs (standard normal plus 0.3,
        of their own seed), the work folder, and whether
        `SAELENS_WRITE_FIXTURES=1` asks for the fixtures to be rewritten.
    """
    import torch

    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = (np.random.default_rng(1).normal(size=(rows, width)) + 0.3).astype("float32")
    work = tmp_path_factory.mktemp(name)
    return rng, inputs, work, os.environ.get("SAELENS_WRITE_FIXTURES") == "1"


def randomize_export_cases(model, name, rng):
    """Gives our random `model` what its export must carry over, by case `name`.

    `relu_weighted`: decoder rows of norms from 0.5 to 2 (the export folds
    them into the latents' scale); `jumprelu`: random thresholds;
    `batch_topk` and `matryoshka`: an inference threshold of 0.2.
    """
    if name == "relu_weighted":
        kernel = ops.convert_to_numpy(model.decoder.kernel)
        model.decoder.kernel.assign(
            kernel * rng.uniform(0.5, 2.0, size=(model.latent_dim, 1)).astype("float32"))
    if name == "jumprelu":
        model.encoder.log_threshold.assign(
            np.log(rng.uniform(0.05, 0.4, size=model.latent_dim)).astype("float32"))
    if name in ("batch_topk", "matryoshka"):
        model.encoder.inference_threshold.assign(0.2)


def randomize_torch_parameters(module, rng):
    """Draws every parameter of a peer's torch `module` anew, seeded from `rng`.

    A `threshold` uniform in [0.05, 0.35), other vectors (biases) normal
    with scale 0.2, matrices (`W_enc`, `W_dec` with rows not of unit norm,
    `W_skip`) normal with scale 0.4.
    """
    import torch

    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    with torch.no_grad():
        for param_name, param in module.named_parameters():
            if param_name == "threshold":
                param.copy_(torch.rand(param.shape, generator=generator) * 0.3 + 0.05)
            elif param.ndim == 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.4)


def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def quiet_load(folder):
    """`load_sae(folder)`, quiet: the peers' decoder rows are not unit norm."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_sae(folder)


def store_fixture(folder, target, inputs, latents, reconstruction):
    """Copies a peer's `folder` to `target`, with the first 16 rows of the
    inputs and of the peer's latents and reconstruction."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    np.save(target / "inputs.npy", inputs[:16])
    np.save(target / "expected_latents.npy", latents[:16])
    np.save(target / "expected_reconstruction.npy", reconstruction[:16])
