"""`load_dictionary_learning`: dictionary_learning SAEs, converted to safetensors.

dictionary_learning (saprmarks/dictionary_learning) saves `ae.pt`, a torch
pickle, which this package never reads. A user with torch converts it once,
outside this package, into `ae.safetensors` (the floating-point tensors of
its state dict) and `cfg.json` (`{"k": ...}` for a TopK SAE, else `{}`):
the three lines are in `docs/interop.md`.

`AutoEncoder` (`bias`, `encoder.weight`, `encoder.bias`, `decoder.weight`)
encodes `relu((x - bias) @ encoder.weight.T + encoder.bias)` and decodes
`f @ decoder.weight.T + bias`; `AutoEncoderTopK` (`b_dec`, `encoder.weight`,
`encoder.bias`, `decoder.weight`, and the buffer `threshold`, unused by its
default `encode`) keeps the top `k`.
"""

from gated_sae_layers.interop import _architectures, _checks, _safetensors

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "ae.safetensors"


def load_dictionary_learning(folder):
    """Loads a converted dictionary_learning `AutoEncoder` or `AutoEncoderTopK`.

    Args:
        folder: holds `ae.safetensors` and `cfg.json` (`{}` for
            `AutoEncoder`, `{"k": k}` for `AutoEncoderTopK`), written by the
            conversion in the module docstring.

    Returns:
        A ReLU SAE (`weight_by_decoder_norm=True`, sparsity coefficient 0:
        set it before training further) or a TopK SAE with the weights.
        Everything is checked first; a `ValueError` names the file and the
        problem.
    """
    folder = _checks.check_folder(folder)
    path = folder / CFG_FILENAME
    cfg = _checks.read_json_object(folder, CFG_FILENAME)
    found = _safetensors.safetensors_shapes(folder, WEIGHTS_FILENAME)
    weights_path = folder / WEIGHTS_FILENAME
    if len(found.get("encoder.weight", ())) != 2:
        raise ValueError(f"{weights_path}: missing the 2-D tensor 'encoder.weight'.")
    d_sae, d_in = found["encoder.weight"]
    shapes = {"encoder.weight": (d_sae, d_in), "encoder.bias": (d_sae,),
              "decoder.weight": (d_in, d_sae)}
    if "k" in cfg:
        k = _checks.cfg_int(cfg, "k", path)
        if k > d_sae:
            raise ValueError(f"{path}: `k` must be <= {d_sae}. Received: k={k}")
        shapes.update(b_dec=(d_in,), threshold=())
        bias = "b_dec"
    else:
        shapes["bias"] = (d_in,)
        bias = "bias"
    weights = _checks.check_tensors(
        _safetensors.read_safetensors(folder, WEIGHTS_FILENAME, shapes), shapes, weights_path)
    tensors = {"W_enc": weights["encoder.weight"].T, "b_enc": weights["encoder.bias"],
               "W_dec": weights["decoder.weight"].T, "b_dec": weights[bias]}
    if "k" in cfg:
        return _architectures.build_model("topk", {"k": k}, tensors, d_in, d_sae, path,
                                          weights_path)
    return _architectures.build_model(
        "relu", {"sparsity_coefficient": 0.0, "weight_by_decoder_norm": True},
        tensors, d_in, d_sae, path, weights_path)
