"""`load_sparsify`: EleutherAI sparsify folders (`cfg.json` + `sae.safetensors`).

sparsify's `SparseCoder` (`sparsify/sparse_coder.py`) stores `encoder.weight`
`(num_latents, d_in)`, `encoder.bias` `(num_latents,)`, `W_dec`
`(num_latents, d_in)` and `b_dec` `(d_in,)`; it encodes
`top_k(relu((x - b_dec) @ encoder.weight.T + encoder.bias))` and decodes
`f @ W_dec + b_dec`: our TopK SAE, with `W_enc = encoder.weight.T`.

With `transcode=True` (a transcoder, `sparsify.TranscoderConfig`) the encoder
reads `x` uncentered, as ours does, and `W_dec`, `b_dec` write the target (of
width `d_in` too, in sparsify 1.x); with `skip_connection=True` it adds
`x @ W_skip.T`, `W_skip` `(d_in, d_in)` (zeros at first): our TopK transcoder
(`build_transcoder("topk", ...)`, with `skip=True`), `W_skip.T` its skip's
kernel. A transcoder's decoder rows are never normalized by sparsify, nor by
our k-sparse transcoders (free rows): they load as they are, the same outputs.
"""

from gated_sae_layers.interop import _architectures, _checks, _safetensors

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae.safetensors"


def load_sparsify(folder):
    """Loads a sparsify TopK SAE or transcoder folder as our TopK model.

    Checked before building, with a `ValueError` naming the file: `cfg.json`
    must be a JSON object with integer `d_in` and `k`, and `num_latents`
    (or `expansion_factor`); `activation` must be `"topk"`, `embed_skip` and
    `gram_lookup` false, and `skip_connection` only with `transcode` (a
    sparsify SAE with a skip has no equivalent here); the tensors must be
    those the config gives (`W_skip` too with `skip_connection`), of those
    shapes, floating and finite, with nothing else.

    Args:
        folder: the sparsify hookpoint folder (`.../layers.6`).

    Returns:
        A `SparseAutoencoder` from `build_sae("topk", d_in, num_latents, k=k)`,
        or, for `transcode: true`, from `build_transcoder("topk", d_in, d_in,
        num_latents, k=k, skip=skip_connection)`, with the folder's weights
        (reproducing sparsify's `forward(x).sae_out`; TopK has no sparsity
        coefficient to set).
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
    for flag in ("embed_skip", "gram_lookup"):
        if _checks.cfg_bool(cfg, flag, path, False):
            raise ValueError(f"{path}: `{flag}` is true; only sparsify SAEs and "
                             "transcoders (no lookup) load here.")
    transcode = _checks.cfg_bool(cfg, "transcode", path, False)
    skip = _checks.cfg_bool(cfg, "skip_connection", path, False)
    if skip and not transcode:
        raise ValueError(
            f"{path}: `skip_connection` is true and `transcode` false: a sparsify SAE "
            "with a skip connection, which the kit has no equivalent of (a skip "
            "belongs to a transcoder here). Received: skip_connection=True, "
            "transcode=False")
    shapes = {"encoder.weight": (num_latents, d_in), "encoder.bias": (num_latents,),
              "W_dec": (num_latents, d_in), "b_dec": (d_in,)}
    if skip:
        shapes["W_skip"] = (d_in, d_in)
    weights = _checks.check_tensors(
        _safetensors.read_safetensors(folder, WEIGHTS_FILENAME, shapes), shapes,
        folder / WEIGHTS_FILENAME)
    tensors = {"W_enc": weights["encoder.weight"].T, "b_enc": weights["encoder.bias"],
               "W_dec": weights["W_dec"], "b_dec": weights["b_dec"]}
    hyper = {"k": k}
    if transcode:
        hyper.update(output_dim=d_in, skip=skip)
        if skip:
            tensors["W_skip"] = weights["W_skip"]   # SAELens's layout: (d_out, d_in)
    return _architectures.build_model("topk", hyper, tensors, d_in, num_latents,
                                      path, folder / WEIGHTS_FILENAME)
