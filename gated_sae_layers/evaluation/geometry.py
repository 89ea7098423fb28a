"""The geometry of an SAE's dictionary: cosines between its weight vectors.

Pure functions of the weights (no data): SAEBench's per-latent feature
statistics. Both take numpy-convertible kernels in the kit's layouts,
`W_dec` as `(latent_dim, input_dim)` (one row per latent) and the encoder's
`input_kernel` as `(input_dim, latent_dim)` (one column per latent).
"""

import numpy as np
from keras import ops

from gated_sae_layers._validation import check_positive_int

# A vector shorter than this counts as zero: its cosine with anything is 0.
EPSILON = 1e-8


def _unit_rows(matrix):
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, EPSILON)


def _kernel(kernel, name, ndim=2):
    array = np.asarray(ops.convert_to_numpy(kernel), "float64")
    if array.ndim != ndim or 0 in array.shape:
        raise ValueError(
            f"`{name}` must be a non-empty 2-D kernel. Received: {name}.shape={array.shape}")
    return array


def max_decoder_cosine(decoder_kernel, block_rows=1024):
    """Per latent, the largest `|cos|` between its decoder row and any other row.

    ```
    max_decoder_cosine[i] = max_{j != i} |W_dec[i] . W_dec[j]| / (||W_dec[i]|| ||W_dec[j]||)
    ```

    Near 1 means latent `i` has a (near-)duplicate or an opposite twin in
    the dictionary. The `latent_dim x latent_dim` cosine matrix is computed
    `block_rows` rows at a time, never whole. A row of norm below `1e-8`
    has cosine 0 with every row.

    Args:
        decoder_kernel: `(latent_dim, input_dim)` `W_dec` (`model.decoder.kernel`).
        block_rows: int, rows of the cosine matrix held at once.

    Returns:
        `(latent_dim,)` float64 array in `[0, 1]`; NaN everywhere when
        `latent_dim` is 1 (there is no other row).

    Example:

    >>> import numpy as np
    >>> kernel = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> max_decoder_cosine(kernel).tolist()
    [1.0, 0.0, 1.0]
    """
    block_rows = check_positive_int(block_rows, "block_rows")
    rows = _unit_rows(_kernel(decoder_kernel, "decoder_kernel"))
    latent_dim = rows.shape[0]
    if latent_dim == 1:
        return np.full(1, np.nan)
    result = np.empty(latent_dim)
    for start in range(0, latent_dim, block_rows):
        block = np.abs(rows[start:start + block_rows] @ rows.T)
        own = np.arange(start, start + len(block))
        block[own - start, own] = -1.0  # never the latent itself
        result[start:start + len(block)] = block.max(axis=1)
    return np.clip(result, 0.0, 1.0)


def encoder_decoder_cosine(encoder_kernel, decoder_kernel):
    """Per latent, the cosine between its encoder column and its own decoder row.

    ```
    encoder_decoder_cosine[i] = W_enc[:, i] . W_dec[i] / (||W_enc[:, i]|| ||W_dec[i]||)
    ```

    Signed, not a maximum over other latents: SAEBench's
    `encoder_decoder_cosine_sim`. 1 means the latent reads the direction it
    writes (a tied, orthogonal-dictionary-like latent); lower values mean
    its encoder also subtracts the directions of interfering latents. For
    the gated SAE the encoder column is `W_gate`'s (`input_kernel`);
    `W_mag = exp(r_mag) * W_gate` has the same direction, so the value is
    the same for both paths. A vector of norm below `1e-8` gives 0.

    Args:
        encoder_kernel: `(input_dim, latent_dim)` `W_enc` (`model.encoder.input_kernel`).
        decoder_kernel: `(latent_dim, input_dim)` `W_dec` (`model.decoder.kernel`).

    Returns:
        `(latent_dim,)` float64 array in `[-1, 1]`.

    Example:

    >>> import numpy as np
    >>> encoder = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> decoder = np.array([[2.0, 0.0], [0.0, -1.0]])
    >>> np.round(encoder_decoder_cosine(encoder, decoder), 4).tolist()
    [1.0, -0.7071]
    """
    columns = _kernel(encoder_kernel, "encoder_kernel").T
    rows = _kernel(decoder_kernel, "decoder_kernel")
    if columns.shape != rows.shape:
        raise ValueError(
            "`encoder_kernel` must be (input_dim, latent_dim) and `decoder_kernel` "
            "(latent_dim, input_dim) of the same model. Received: "
            f"encoder_kernel.shape={columns.T.shape}, decoder_kernel.shape={rows.shape}")
    cosine = (_unit_rows(columns) * _unit_rows(rows)).sum(axis=1)
    return np.clip(cosine, -1.0, 1.0)
