"""Our transcoders <-> SAELens 6.x transcoder folders: the names, shapes and skip.

SAELens 6.x (`sae_lens/saes/transcoder.py`) has four transcoders. Each reads
`x` uncentered (`apply_b_dec_to_input` must be false: `TranscoderConfig`
refuses true) and writes `d_out` columns:

```
f       = act(x @ W_enc + b_enc)               # W_enc (d_in, d_sae)
forward = f @ W_dec + b_dec  (+ x @ W_skip.T)  # W_dec (d_sae, d_out), W_skip (d_out, d_in)
```

| SAELens `architecture` | `act` | tensors besides `W_enc`, `b_enc`, `W_dec`, `b_dec` | ours |
| --- | --- | --- | --- |
| `transcoder` | ReLU | | `relu` |
| `skip_transcoder` | ReLU | `W_skip` | `relu`, `skip=True` |
| `jumprelu_transcoder` | JumpReLU | `threshold` | `jumprelu`; `batch_topk`, `matryoshka` |
| `jumprelu_skip_transcoder` | JumpReLU | `threshold`, `W_skip` | the same, `skip=True` |

So a transcoder exports as the SAELens transcoder of the SAELens SAE
architecture its `Architecture` record names (`saelens`: `standard` or
`jumprelu`), with the same tensor codec; SAELens has no TopK or gated
transcoder, so those raise a `TypeError`. Our `SkipConnection` holds
`W_skip.T` (`kernel`, `(input_dim, output_dim)`); the float64 dicts of
interop hold SAELens's `W_skip`.
"""

from gated_sae_layers._keras_compat import sublayers
from gated_sae_layers.layers.skip_connection import SkipConnection
from gated_sae_layers.models.builders import ARCHITECTURES

SAELENS_TRANSCODERS = {
    ("standard", False): "transcoder",
    ("standard", True): "skip_transcoder",
    ("jumprelu", False): "jumprelu_transcoder",
    ("jumprelu", True): "jumprelu_skip_transcoder",
}
"""`{(SAELens SAE architecture, skip): SAELens transcoder architecture}`."""

_SAE_OF = {name: key for key, name in SAELENS_TRANSCODERS.items()}


def split(saelens):
    """`(SAELens SAE architecture, skip)` of a SAELens `architecture`; `skip` is
    None for an SAE (`"topk"` -> `("topk", None)`, `"skip_transcoder"` ->
    `("standard", True)`)."""
    return _SAE_OF.get(saelens, (saelens, None))


def exportable():
    """Our architectures that export as a SAELens transcoder (`relu`, ...)."""
    return [name for name, record in ARCHITECTURES.items()
            if any(record.saelens == sae for sae, _ in SAELENS_TRANSCODERS)]


def saelens_name(architecture, skip):
    """The SAELens transcoder `architecture` of our transcoder `architecture`.

    Raises:
        TypeError: SAELens has no transcoder of that encoder (TopK, gated).
    """
    record = ARCHITECTURES.get(architecture)
    name = SAELENS_TRANSCODERS.get((record.saelens if record else None, skip))
    if name is None:
        raise TypeError(
            f"Cannot export a {architecture!r} transcoder: SAELens 6.x has ReLU and "
            f"JumpReLU transcoders only ({', '.join(sorted(_SAE_OF))}). The kit's "
            f"{', '.join(exportable())} transcoders export (BatchTopK and Matryoshka "
            "as JumpReLU, with their inference threshold); keep a "
            f"{architecture} transcoder as a `.keras` file. Received: a "
            f"{architecture!r} transcoder{' with skip' if skip else ''}.")
    return name


def skip_layer(model):
    """The model's `SkipConnection`, or None (an SAE, a plain transcoder)."""
    layers = [layer for layer in sublayers(model) if isinstance(layer, SkipConnection)]
    if len(layers) > 1:
        raise ValueError(f"Model '{model.name}' has {len(layers)} SkipConnection "
                         "layers; a skip transcoder has one.")
    return layers[0] if layers else None


def transcoder_shapes(d_in, d_sae, d_out, skip):
    """The shapes a transcoder changes in `expected_shapes`: `W_dec`, `b_dec`
    in the output space, and `W_skip` (`(d_out, d_in)`) when `skip`."""
    shapes = {"W_dec": (d_sae, d_out), "b_dec": (d_out,)}
    if skip:
        shapes["W_skip"] = (d_out, d_in)
    return shapes
