"""`build_transcoder`: a transcoder or skip transcoder of any encoder of the kit."""

from gated_sae_layers.models.builders import assembly
from gated_sae_layers.models.builders.registry import build_sae


def build_transcoder(architecture, input_dim, output_dim, latent_dim, skip=False,
                     **kwargs):
    """Builds a transcoder (or skip transcoder) with any encoder of `build_sae`.

    ```
    f     = encoder(x)                          # x: the MLP block's input
    y_hat = f W_dec + b_dec  (+ x W_skip)       # y: the MLP block's output
    L     = ||y - y_hat||^2 + the architecture's other terms
    ```

    Dunefsky, Chlenski & Nanda 2024 ("Transcoders find interpretable LLM
    feature circuits", arXiv:2406.11944) replace an MLP block by a sparse
    dictionary that reads the block's input and reconstructs its output;
    Paulo, Shabalin & Belrose 2025 (arXiv:2501.18823) add the linear skip
    `x W_skip`, which starts at zero. The encoder reads `x` uncentered and
    `b_dec` lives in the output space (`DictionaryEnds`). Train with the
    stock `fit` on pairs, `model.fit(x, y)` or a dataset of `(x, y)`
    batches (`paired_dataset`); every callback of the kit applies
    (`DecoderNormalizer`, `SparsityWarmup`, `TargetL0`, the resampler with
    `targets=`). `model.decode(f)` gives `f W_dec + b_dec` (the skip needs
    `x`: `model.predict(x)["reconstruction"]` includes it).

    Args:
        architecture: one of `build_sae`'s architectures (`"gated"`,
            `"relu"`, `"topk"`, `"batch_topk"`, `"jumprelu"`,
            `"matryoshka"`).
        input_dim: int, the width of `x`.
        output_dim: int, the width of `y`.
        latent_dim: int, the number of latents.
        skip: bool, a skip transcoder.
        **kwargs: the architecture's builder arguments (`k=`,
            `sparsity_coefficient=`, ..., `dtype`); `name` defaults to
            `"<architecture>_transcoder"` (`"<architecture>_skip_transcoder"`).

    Returns:
        A `SparseAutoencoder` with `is_transcoder` True, the outputs, loss
        terms and metrics of the architecture's SAE (`fvu` is measured on
        `y`); its `architecture` record holds `output_dim` and `skip`.

    Example:

    >>> import numpy as np
    >>> model = build_transcoder("topk", 8, 4, 32, k=4, skip=True)
    >>> model.input_dim, model.output_dim, model.is_transcoder
    (8, 4, True)
    >>> model.predict_on_batch(np.ones((2, 8), "float32"))["reconstruction"].shape
    (2, 4)
    """
    assembly.check_bool(skip, "skip")
    if output_dim is None:
        raise ValueError(
            "`build_transcoder` needs the width of its target, `output_dim` (an int); "
            "`build_sae` builds an SAE. Received: output_dim=None")
    kwargs.setdefault("name", f"{architecture}_{'skip_' if skip else ''}transcoder")
    return build_sae(architecture, input_dim, latent_dim, output_dim=output_dim,
                     skip=skip, **kwargs)
