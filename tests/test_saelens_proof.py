"""Proof of SAELens compatibility, both ways, with the real sae-lens 6.x (opt-in).

Skips unless torch and sae-lens are importable (the test extras install
neither; CI skips it). To run it::

    pip install "torch>=2.1" "sae-lens>=6,<7" safetensors
    python -m pytest tests/test_saelens_proof.py -n 0 -rs

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
   `save_model` are read with `load_sae` and compared the same way.

Every max absolute difference (float32) must be under `TOLERANCE` (1e-5).
With `SAELENS_WRITE_FIXTURES=1` the SAELens folders of part 2, `inputs.npy`
and SAELens' `expected_latents.npy` / `expected_reconstruction.npy` are
(re)written to `tests/fixtures/saelens/<name>/`, which `tests/test_interop.py`
checks without torch::

    SAELENS_WRITE_FIXTURES=1 python -m pytest tests/test_saelens_proof.py -n 0

Run with `-s` to see the table of differences that `benchmarks/RESULTS.md`
quotes.
"""

import pathlib

import pytest

import gated_sae_layers as gsl
from gated_sae_layers.interop import load_sae, save_sae
from tests.helpers_proof import (
    max_diff, quiet_load, randomize_export_cases, randomize_torch_parameters,
    start_proof, store_fixture)
from tests.torch_peers import import_torch

torch = import_torch()
sae_lens = pytest.importorskip("sae_lens", minversion="6")

D_IN, D_SAE, ROWS = 8, 16, 32
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "saelens"
TOLERANCE = 1e-5
OURS = ("gated", "relu", "relu_weighted", "jumprelu", "topk", "topk_scaled",
        "batch_topk", "matryoshka")
THEIRS = ("standard", "gated", "jumprelu", "topk", "topk_rescaled",
          "standard_no_b_dec")


def _randomize_ours(model, rng):
    for variable in model.trainable_variables:
        if variable.path.endswith(("bias", "magnitude_log_scale")):
            variable.assign(rng.normal(0, 0.2, size=variable.shape).astype("float32"))


def _ours(rng):
    """Our random SAEs, one per architecture (and the two export special cases)."""
    kwargs = {"gated": {"sparsity_coefficient": 0.1},
              "relu": {"sparsity_coefficient": 0.1},
              "relu_weighted": {"sparsity_coefficient": 0.1,
                                "weight_by_decoder_norm": True},
              "jumprelu": {"sparsity_coefficient": 0.1, "initial_threshold": 0.1},
              "topk": {"k": 4}, "topk_scaled": {"k": 4}, "batch_topk": {"k": 4},
              "matryoshka": {"k": 4, "prefix_sizes": [4, 8]}}
    models = {}
    for arch in OURS:
        model = gsl.build_sae(arch.split("_w")[0].replace("topk_scaled", "topk"),
                              D_IN, D_SAE, **kwargs[arch])
        _randomize_ours(model, rng)
        randomize_export_cases(model, arch, rng)
        if arch == "topk_scaled":
            model.normalization_scale = 2.5
        models[arch] = model
    return models


def _saelens_sae(name, rng):
    metadata = sae_lens.saes.sae.SAEMetadata(
        model_name="random", hook_name="blocks.0.hook_resid_post", context_size=16,
        prepend_bos=True)
    common = {"d_in": D_IN, "d_sae": D_SAE, "metadata": metadata}
    if name.startswith("standard"):
        sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(
            apply_b_dec_to_input=name == "standard", **common))
    elif name == "gated":
        sae = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(**common))
    elif name == "jumprelu":
        sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(**common))
    else:
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(
            k=4, rescale_acts_by_decoder_norm=name == "topk_rescaled", **common))
    randomize_torch_parameters(sae, rng)
    return sae


def _saelens_outputs(sae, inputs):
    with torch.no_grad():
        latents = sae.encode(torch.from_numpy(inputs))
        return latents.numpy(), sae.decode(latents).numpy()


@pytest.fixture(scope="module")
def differences(tmp_path_factory):
    """{(direction, name): (max |diff| latents, max |diff| reconstruction)}.

    One pass in the order the fixtures were written (the same random draws),
    our exports first; prints the table.
    """
    rng, inputs, work, write_fixtures = start_proof(
        tmp_path_factory, "saelens_proof", ROWS, D_IN)
    found = {}
    for name, model in _ours(rng).items():
        folder = save_sae(model, work / name, metadata={"model_name": "random"})
        sae = sae_lens.SAE.load_from_disk(folder)
        latents, reconstruction = _saelens_outputs(sae, inputs)
        scale = model.normalization_scale or 1.0   # it was trained on scale * x
        ours = {key: value / scale for key, value in
                model.predict_on_batch(inputs * scale).items()}
        back = load_sae(folder).predict_on_batch(inputs)
        found["ours -> SAELens", f"{name} ({sae.cfg.architecture()})"] = (
            max_diff(latents, back["latents"]),
            max_diff(reconstruction, ours["reconstruction"]))
    for name in THEIRS:
        sae = _saelens_sae(name, rng)
        folder = work / f"saelens_{name}"
        sae.save_model(folder)
        latents, reconstruction = _saelens_outputs(sae, inputs)
        ours = quiet_load(folder).predict_on_batch(inputs)
        # topk_rescaled: SAELens' latents are hidden_pre * |W_dec_i|, as ours.
        found["SAELens -> ours", name] = (
            max_diff(latents, ours["latents"]),
            max_diff(reconstruction, ours["reconstruction"]))
        if write_fixtures:
            store_fixture(folder, FIXTURES / name, inputs, latents, reconstruction)
    print(f"\nsae-lens {sae_lens.__version__}, torch {torch.__version__}, "
          f"gated-sae-layers {gsl.__version__}; d_in={D_IN}, d_sae={D_SAE}, "
          f"{ROWS} rows, float32")
    print("| SAE (SAELens architecture) | direction | max abs diff latents "
          "| max abs diff reconstruction | < 1e-5 |\n| --- | --- | --- | --- | --- |")
    for (direction, name), diffs in found.items():
        print(f"| {name} | {direction} | {diffs[0]:.2e} | {diffs[1]:.2e} | "
              f"{'pass' if max(diffs) < TOLERANCE else 'FAIL'} |")
    if write_fixtures:
        print(f"fixtures written to {FIXTURES}")
    return found


def _check(differences, direction, name):
    """The one row of `direction` for `name` is under `TOLERANCE` in both columns."""
    keys = [key for key in differences
            if key[0] == direction and key[1].split(" (")[0] == name]
    assert len(keys) == 1, f"{direction} {name}: found {keys}"
    label, (latents, reconstruction) = keys[0][1], differences[keys[0]]
    assert latents < TOLERANCE, f"{label}: latents differ by {latents:.2e}"
    assert reconstruction < TOLERANCE, (
        f"{label}: reconstructions differ by {reconstruction:.2e}")


@pytest.mark.parametrize("name", OURS)
def test_our_export_reads_the_same_in_saelens(differences, name):
    _check(differences, "ours -> SAELens", name)


@pytest.mark.parametrize("name", THEIRS)
def test_saelens_export_reads_the_same_in_ours(differences, name):
    _check(differences, "SAELens -> ours", name)
