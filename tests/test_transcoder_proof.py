"""Proof of transcoder compatibility with the real SAELens 6.x and sparsify (opt-in).

Skips unless torch and sae-lens are importable (the sparsify part also
needs eai-sparsify); the test extras install none of them, so CI skips it.
To run it::

    pip install "torch>=2.1" "sae-lens>=6,<7" eai-sparsify safetensors
    python -m pytest tests/test_transcoder_proof.py -n 0 -s

1. Our transcoders in SAELens: for each kind that exports (ReLU, ReLU with
   free decoder rows, JumpReLU, BatchTopK, Matryoshka, each without and
   with the skip, and a skip transcoder with a `normalization_scale`), a
   random transcoder is written with `save_sae`, loaded with
   `SAE.load_from_disk` (which must give the SAELens class of the kind:
   `Transcoder`, `SkipTranscoder`, `JumpReLUTranscoder`,
   `JumpReLUSkipTranscoder`), and SAELens' `forward(x)` is compared with
   our `predict(x)["reconstruction"]`; its `encode(x)` with the latents of
   the model `load_sae` reads back from the folder.
2. SAELens transcoders in ours: a random transcoder of each of the four
   kinds (`d_out` != `d_in`, random `W_skip`, thresholds, non-unit
   decoder rows) written by SAELens' `save_model` is read with `load_sae`
   and compared the same way.
3. sparsify transcoders in ours: a random `SparseCoder` with
   `transcode=True`, without and with `skip_connection=True`, written by
   its `save_to_disk`, read with `load_sae`; `forward(x).sae_out` against
   our reconstruction, its top-k latents (scattered) against ours.

Every max absolute difference (float32) must be under `TOLERANCE` (1e-5).
With `SAELENS_WRITE_FIXTURES=1` the folders of parts 2 and 3, `inputs.npy`,
and the peers' `expected_reconstruction.npy` / `expected_latents.npy` are
(re)written to `tests/fixtures/saelens/<kind>/` and
`tests/fixtures/sparsify/<kind>/`, which `tests/test_transcoder_interop.py`
checks without torch::

    SAELENS_WRITE_FIXTURES=1 python -m pytest tests/test_transcoder_proof.py -n 0
"""

import pathlib

import numpy as np
import pytest

import gated_sae_layers as gsl
from gated_sae_layers.interop import load_sae, save_sae
from tests.helpers_proof import (
    max_diff, quiet_load, randomize_export_cases, randomize_torch_parameters,
    start_proof, store_fixture)
from tests.torch_peers import import_torch

torch = import_torch()
sae_lens = pytest.importorskip("sae_lens", minversion="6")

D_IN, D_OUT, D_SAE, ROWS = 8, 6, 16, 32
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
TOLERANCE = 1e-5
SAELENS_KINDS = {"transcoder": "Transcoder", "skip_transcoder": "SkipTranscoder",
                 "jumprelu_transcoder": "JumpReLUTranscoder",
                 "jumprelu_skip_transcoder": "JumpReLUSkipTranscoder"}
OURS = {   # name: (architecture, builder arguments, SAELens architecture)
    "relu": ("relu", {"sparsity_coefficient": 0.1}, "transcoder"),
    "relu_weighted": ("relu", {"sparsity_coefficient": 0.1,
                               "weight_by_decoder_norm": True}, "transcoder"),
    "jumprelu": ("jumprelu", {"sparsity_coefficient": 0.1}, "jumprelu_transcoder"),
    "batch_topk": ("batch_topk", {"k": 4}, "jumprelu_transcoder"),
    "matryoshka": ("matryoshka", {"k": 4, "prefix_sizes": [4, 8]},
                   "jumprelu_transcoder"),
}
OUR_CASES = [f"{name}{suffix}" for name in OURS for suffix in ("", "_skip")] + [
    "relu_skip_scaled"]
SPARSIFY_KINDS = ("transcoder", "skip_transcoder")


def _our_transcoder(case, rng):
    """A random transcoder of `case` (`relu_skip`, `jumprelu`, ...)."""
    name = case.removesuffix("_scaled").removesuffix("_skip")
    architecture, kwargs, _ = OURS[name]
    model = gsl.build_transcoder(architecture, D_IN, D_OUT, D_SAE,
                                 skip="_skip" in case, **kwargs)
    for variable in model.trainable_variables:
        if variable.path.endswith(("bias", "skip/kernel")):
            variable.assign(rng.normal(0, 0.3, size=variable.shape).astype("float32"))
    randomize_export_cases(model, name, rng)
    if case.endswith("_scaled"):
        model.normalization_scale = 2.5
    return model


def _saelens_transcoder(kind, rng):
    metadata = sae_lens.saes.sae.SAEMetadata(
        model_name="random", hook_name="blocks.0.ln2.hook_normalized",
        hook_name_out="blocks.0.hook_mlp_out", context_size=16, prepend_bos=True)
    config = getattr(sae_lens, f"{SAELENS_KINDS[kind]}Config")(
        d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False,
        metadata=metadata)
    sae = getattr(sae_lens, SAELENS_KINDS[kind])(config)
    randomize_torch_parameters(sae, rng)
    return sae.eval()


def _saelens_outputs(sae, inputs):
    """SAELens' `encode(x)` and `forward(x)` (which adds a skip's `x W_skip^T`)."""
    with torch.no_grad():
        x = torch.from_numpy(inputs)
        return sae.encode(x).numpy(), sae(x).numpy()


def _sparsify_transcoder(kind, rng):
    sparsify = pytest.importorskip("sparsify")
    config = sparsify.SparseCoderConfig(num_latents=D_SAE, k=4, transcode=True,
                                        skip_connection=kind == "skip_transcoder")
    coder = sparsify.SparseCoder(D_IN, config)
    randomize_torch_parameters(coder, rng)   # it has no `threshold`
    return coder


def _sparsify_outputs(coder, inputs):
    """sparsify's top-k latents, scattered to `(rows, num_latents)`, and `sae_out`."""
    with torch.no_grad():
        output = coder(torch.from_numpy(inputs))
        latents = torch.zeros(inputs.shape[0], coder.num_latents)
        latents.scatter_(1, output.latent_indices, output.latent_acts)
        return latents.numpy(), output.sae_out.numpy()


def importlib_available(name):
    """Whether `name` is installed (sparsify is optional here)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _l0(latents):
    return float(np.mean(np.sum(latents != 0, axis=1)))


def _peer_in_ours(found, direction, kind, peer_class, folder, inputs, peer_outputs,
                  fixture):
    """Reads a peer's `folder` with `load_sae` and records, under `(direction,
    kind)`, how far our outputs are from the peer's `(latents, output)`;
    writes the folder as `fixture` unless it is `None`."""
    latents, output = peer_outputs
    ours = quiet_load(folder).predict_on_batch(inputs)
    found[direction, kind] = (
        peer_class, _l0(latents), max_diff(latents, ours["latents"]),
        max_diff(output, ours["reconstruction"]))
    if fixture is not None:
        store_fixture(folder, fixture, inputs, latents, output)


@pytest.fixture(scope="module")
def differences(tmp_path_factory):
    """{(direction, name): (peer class, mean L0, max |diff| latents, max |diff| output)}.

    The mean L0 (active latents per row, the peer's) shows that the latents
    compared are neither all zero nor all active.

    One pass in a fixed order (the same random draws each run); prints the table.
    """
    rng, inputs, work, write_fixtures = start_proof(
        tmp_path_factory, "transcoder_proof", ROWS, D_IN)
    found = {}
    for case in OUR_CASES:
        model = _our_transcoder(case, rng)
        folder = save_sae(model, work / case, metadata={"model_name": "random"})
        sae = sae_lens.SAE.load_from_disk(folder)
        latents, output = _saelens_outputs(sae, inputs)
        scale = model.normalization_scale or 1.0   # trained on (scale x, scale y)
        ours = model.predict_on_batch(inputs * scale)["reconstruction"] / scale
        back = load_sae(folder).predict_on_batch(inputs)
        found["ours -> SAELens", case] = (
            type(sae).__name__, _l0(latents), max_diff(latents, back["latents"]),
            max_diff(output, ours))
    for kind in SAELENS_KINDS:
        sae = _saelens_transcoder(kind, rng)
        folder = work / f"saelens_{kind}"
        sae.save_model(folder)
        _peer_in_ours(found, "SAELens -> ours", kind, type(sae).__name__, folder, inputs,
                      _saelens_outputs(sae, inputs),
                      FIXTURES / "saelens" / kind if write_fixtures else None)
    if importlib_available("sparsify"):
        for kind in SPARSIFY_KINDS:
            coder = _sparsify_transcoder(kind, rng)
            folder = work / f"sparsify_{kind}"
            coder.save_to_disk(folder)
            _peer_in_ours(found, "sparsify -> ours", kind, "SparseCoder", folder, inputs,
                          _sparsify_outputs(coder, inputs),
                          FIXTURES / "sparsify" / kind if write_fixtures else None)
    versions = [f"sae-lens {sae_lens.__version__}", f"torch {torch.__version__}"]
    if importlib_available("sparsify"):
        import importlib.metadata

        versions.append(f"eai-sparsify {importlib.metadata.version('eai-sparsify')}")
    print(f"\n{', '.join(versions)}, gated-sae-layers {gsl.__version__}; d_in={D_IN}, "
          f"d_out={D_OUT}, d_sae={D_SAE}, {ROWS} rows, float32")
    print("| transcoder | direction | peer class | mean L0 | max abs diff latents "
          "| max abs diff output | < 1e-5 |\n| --- | --- | --- | ---: | ---: | ---: "
          "| --- |")
    for (direction, name), (peer, l0, *diffs) in found.items():
        print(f"| {name} | {direction} | {peer} | {l0:.1f} | {diffs[0]:.2e} | "
              f"{diffs[1]:.2e} | {'pass' if max(diffs) < TOLERANCE else 'FAIL'} |")
    if write_fixtures:
        print(f"fixtures written to {FIXTURES}")
    return found


def _check(differences, direction, name, peer=None):
    found_peer, l0, latents, output = differences[direction, name]
    if peer is not None:
        assert found_peer == peer, f"{name}: SAELens loaded a {found_peer}"
    assert 0 < l0 < D_SAE, f"{direction} {name}: mean L0 {l0}, nothing compared"
    assert latents < TOLERANCE, f"{direction} {name}: latents differ by {latents:.2e}"
    assert output < TOLERANCE, f"{direction} {name}: outputs differ by {output:.2e}"


@pytest.mark.parametrize("case", OUR_CASES)
def test_our_transcoder_reads_the_same_in_saelens(differences, case):
    kind = OURS[case.removesuffix("_scaled").removesuffix("_skip")][2]
    if "_skip" in case:
        kind = {"transcoder": "skip_transcoder",
                "jumprelu_transcoder": "jumprelu_skip_transcoder"}[kind]
    _check(differences, "ours -> SAELens", case, SAELENS_KINDS[kind])


@pytest.mark.parametrize("kind", SAELENS_KINDS)
def test_saelens_transcoder_reads_the_same_in_ours(differences, kind):
    _check(differences, "SAELens -> ours", kind)


@pytest.mark.parametrize("kind", SPARSIFY_KINDS)
def test_sparsify_transcoder_reads_the_same_in_ours(differences, kind):
    if not importlib_available("sparsify"):
        pytest.skip("eai-sparsify is not installed")
    _check(differences, "sparsify -> ours", kind)


def test_saelens_has_exactly_the_four_transcoders_we_map():
    """SAELens registers these four transcoders and no other (no TopK or gated
    one: their export raises `TypeError`); a new one would show here."""
    from sae_lens.registry import SAE_CLASS_REGISTRY

    from gated_sae_layers.interop._transcoders import SAELENS_TRANSCODERS

    registered = {name: classes[0].__name__ for name, classes in
                  SAE_CLASS_REGISTRY.items() if "transcoder" in name}
    assert registered == SAELENS_KINDS
    assert set(SAELENS_TRANSCODERS.values()) == set(SAELENS_KINDS)
