"""`load_sparsify`: EleutherAI sparsify folders (`cfg.json` + `sae.safetensors`).

sparsify's `SparseCoder` (`sparsify/sparse_coder.py`) stores `encoder.weight`
`(num_latents, d_in)`, `encoder.bias` `(num_latents,)`, `W_dec`
`(num_latents, d_in)` and `b_dec` `(d_in,)`; it encodes
`top_k(relu((x - b_dec) @ encoder.weight.T + encoder.bias))` and decodes
`f @ W_dec + b_dec`: our TopK SAE, with `W_enc = encoder.weight.T`.
"""

from gated_sae_layers.interop import _architectures, _checks, _safetensors

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae.safetensors"


def load_sparsify(folder):
    """Loads a sparsify TopK SAE folder as our TopK `SparseAutoencoder`.

    Checked before building, with a `ValueError` naming the file: `cfg.json`
    must be a JSON object with integer `d_in` and `k`, and `num_latents`
    (or `expansion_factor`); `activation` must be `"topk"` and
    `transcode`, `skip_connection`, `embed_skip` and `gram_lookup` false
    (those coders are not SAEs of this kit); the four tensors must have the
    shapes the config gives, be floating and finite, with nothing else.

    Args:
        folder: the sparsify hookpoint folder (`.../layers.6`).

    Returns:
        A `SparseAutoencoder` from `build_sae("topk", d_in, num_latents, k=k)`
        with the folder's weights (sparsity coefficient-free; TopK has none).
    """
    folder = _checks.check_folder(folder)
    path = folder / CFG_FILENAME
    cfg = _checks.read_json_object(folder, CFG_FILENAME)
    d_in = _checks.cfg_int(cfg, "d_in", path)
    num_latents = _checks.cfg_int(cfg, "num_latents", path, minimum=0, default=0)
    if num_latents == 0:
        num_latents = d_in * _checks.cfg_int(cfg, "expansion_factor", path, default=32)
    k = _checks.cfg_int(cfg, "k", path, default=32)
    if k > num_latents:
        raise ValueError(f"{path}: `k` must be <= num_latents={num_latents}. "
                         f"Received: k={k}")
    _checks.cfg_choice(cfg, "activation", path, ("topk",), default="topk")
    for flag in ("transcode", "skip_connection", "embed_skip", "gram_lookup"):
        if _checks.cfg_bool(cfg, flag, path, False):
            raise ValueError(f"{path}: `{flag}` is true; only plain sparsify SAEs "
                             "(no transcoder, skip connection or lookup) load here.")
    shapes = {"encoder.weight": (num_latents, d_in), "encoder.bias": (num_latents,),
              "W_dec": (num_latents, d_in), "b_dec": (d_in,)}
    weights = _checks.check_tensors(
        _safetensors.read_safetensors(folder, WEIGHTS_FILENAME, shapes), shapes,
        folder / WEIGHTS_FILENAME)
    tensors = {"W_enc": weights["encoder.weight"].T, "b_enc": weights["encoder.bias"],
               "W_dec": weights["W_dec"], "b_dec": weights["b_dec"]}
    return _architectures.build_model("topk", {"k": k}, tensors, d_in, num_latents,
                                      path, folder / WEIGHTS_FILENAME)
