"""Proof of SAELens compatibility, both ways, with the real sae-lens 6.x.

Needs torch and sae-lens next to this package (the test suite does not)::

    pip install "torch>=2.1" "sae-lens>=6,<7" safetensors
    python benchmarks/saelens_interop.py            # the table only
    python benchmarks/saelens_interop.py --write-fixtures

1. Our exports in SAELens: for every architecture of the kit a random SAE
   (random biases, thresholds, a non-unit decoder for the weighted ReLU and
   a folded `normalization_scale` for one TopK) is written with `save_sae`,
   loaded with `SAE.load_from_disk`, and SAELens' `encode`/`decode` are
   compared with ours on the same inputs: latents with those of the model
   `load_sae` reads back from the folder (the export folds decoder norms
   into the latents' scale), reconstructions with the original model's.
2. SAELens exports in ours: random SAELens SAEs (`standard`, `gated`,
   `jumprelu`, `topk`, `topk` with `rescale_acts_by_decoder_norm`, and
   `standard` with `apply_b_dec_to_input=False`) written by SAELens'
   `save_model` are read with `load_sae` and compared the same way. With
   `--write-fixtures` these folders, `inputs.npy` and SAELens'
   `expected_latents.npy` / `expected_reconstruction.npy` go to
   `tests/fixtures/saelens/<name>/`, which `tests/test_interop.py` checks
   without torch.

Prints one row per SAE: the max absolute differences (float32; pass under 1e-5).
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import keras  # noqa: E402
import torch  # noqa: E402
from keras import ops  # noqa: E402
from sae_lens import SAE, __version__ as sae_lens_version  # noqa: E402
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig  # noqa: E402
from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402
from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig  # noqa: E402
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import gated_sae_layers as gsl  # noqa: E402
from gated_sae_layers.interop import load_sae, save_sae  # noqa: E402

D_IN, D_SAE, ROWS = 8, 16, 32
FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "saelens"
TOLERANCE = 1e-5


def _inputs(seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(ROWS, D_IN)) + 0.3).astype("float32")


def _randomize_ours(model, rng):
    for variable in model.trainable_variables:
        if variable.path.endswith(("bias", "magnitude_log_scale")):
            variable.assign(rng.normal(0, 0.2, size=variable.shape).astype("float32"))


def _ours(rng):
    """Our random SAEs, one per architecture (and the two export special cases)."""
    models = {}
    for arch, kwargs in [("gated", {"sparsity_coefficient": 0.1}),
                         ("relu", {"sparsity_coefficient": 0.1}),
                         ("relu_weighted", {"sparsity_coefficient": 0.1,
                                            "weight_by_decoder_norm": True}),
                         ("jumprelu", {"sparsity_coefficient": 0.1,
                                       "initial_threshold": 0.1}),
                         ("topk", {"k": 4}), ("topk_scaled", {"k": 4}),
                         ("batch_topk", {"k": 4}),
                         ("matryoshka", {"k": 4, "prefix_sizes": [4, 8]})]:
        model = gsl.build_sae(arch.split("_w")[0].replace("topk_scaled", "topk"),
                              D_IN, D_SAE, **kwargs)
        _randomize_ours(model, rng)
        if arch == "relu_weighted":
            kernel = ops.convert_to_numpy(model.decoder.kernel)
            model.decoder.kernel.assign(
                kernel * rng.uniform(0.5, 2.0, size=(D_SAE, 1)).astype("float32"))
        if arch == "jumprelu":
            model.encoder.log_threshold.assign(
                np.log(rng.uniform(0.05, 0.4, size=D_SAE)).astype("float32"))
        if arch in ("batch_topk", "matryoshka"):
            model.encoder.inference_threshold.assign(0.2)
        if arch == "topk_scaled":
            model.normalization_scale = 2.5
        models[arch] = model
    return models


def _saelens_sae(name, rng):
    metadata = SAEMetadata(model_name="random", hook_name="blocks.0.hook_resid_post",
                           context_size=16, prepend_bos=True)
    common = {"d_in": D_IN, "d_sae": D_SAE, "metadata": metadata}
    if name.startswith("standard"):
        sae = StandardSAE(StandardSAEConfig(
            apply_b_dec_to_input=name == "standard", **common))
    elif name == "gated":
        sae = GatedSAE(GatedSAEConfig(**common))
    elif name == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(**common))
    else:
        sae = TopKSAE(TopKSAEConfig(
            k=4, rescale_acts_by_decoder_norm=name == "topk_rescaled", **common))
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    with torch.no_grad():
        for param_name, param in sae.named_parameters():
            if param_name == "threshold":
                param.copy_(torch.rand(param.shape, generator=generator) * 0.3 + 0.05)
            elif param.ndim == 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.4)
    return sae


def _saelens_outputs(sae, inputs):
    with torch.no_grad():
        latents = sae.encode(torch.from_numpy(inputs))
        return latents.numpy(), sae.decode(latents).numpy()


def _row(name, direction, latents_diff, reconstruction_diff):
    worst = max(latents_diff, reconstruction_diff)
    print(f"| {name:24s} | {direction:15s} | {latents_diff:.2e} | "
          f"{reconstruction_diff:.2e} | {'pass' if worst < TOLERANCE else 'FAIL'} |")
    return worst < TOLERANCE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-fixtures", action="store_true",
                        help="write tests/fixtures/saelens/<name>/ from SAELens")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inputs = _inputs(1)
    print(f"sae-lens {sae_lens_version}, torch {torch.__version__}, "
          f"gated-sae-layers {gsl.__version__}; d_in={D_IN}, d_sae={D_SAE}, "
          f"{ROWS} rows, float32")
    print(f"| {'SAE (SAELens architecture)':24s} | {'direction':15s} | max abs diff latents "
          "| max abs diff reconstruction | < 1e-5 |")
    print("| --- | --- | --- | --- | --- |")
    ok = True
    work = pathlib.Path(tempfile.mkdtemp())
    for name, model in _ours(rng).items():
        folder = save_sae(model, work / name, metadata={"model_name": "random"})
        sae = SAE.load_from_disk(folder)
        latents, reconstruction = _saelens_outputs(sae, inputs)
        scale = model.normalization_scale or 1.0   # it was trained on scale * x
        ours = {key: value / scale for key, value in
                model.predict_on_batch(inputs * scale).items()}
        back = load_sae(folder).predict_on_batch(inputs)
        ok &= _row(f"{name} ({sae.cfg.architecture()})", "ours -> SAELens",
                   float(np.abs(latents - back["latents"]).max()),
                   float(np.abs(reconstruction - ours["reconstruction"]).max()))
    for name in ("standard", "gated", "jumprelu", "topk", "topk_rescaled",
                 "standard_no_b_dec"):
        sae = _saelens_sae(name, rng)
        folder = work / f"saelens_{name}"
        sae.save_model(folder)
        latents, reconstruction = _saelens_outputs(sae, inputs)
        with warnings.catch_warnings():   # SAELens decoders are not unit norm
            warnings.simplefilter("ignore")
            ours = load_sae(folder).predict_on_batch(inputs)
        # topk_rescaled: SAELens' latents are hidden_pre * |W_dec_i|, as ours.
        latents_diff = float(np.abs(latents - ours["latents"]).max())
        ok &= _row(name, "SAELens -> ours", latents_diff,
                   float(np.abs(reconstruction - ours["reconstruction"]).max()))
        if args.write_fixtures:
            target = FIXTURES / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
            np.save(target / "inputs.npy", inputs[:16])
            np.save(target / "expected_latents.npy", latents[:16])
            np.save(target / "expected_reconstruction.npy", reconstruction[:16])
    shutil.rmtree(work)
    if args.write_fixtures:
        print(f"fixtures written to {FIXTURES}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
