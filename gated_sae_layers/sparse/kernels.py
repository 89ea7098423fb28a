"""The sparse path's three operations, each with a gradient that touches only the slots.

Written in `keras.ops` for every backend. Each gather and scatter is a
`scan` over the slots, one `(rows, width)` gather or scatter-add per slot:
XLA on a CPU runs that in place, where one gather of all slots at once
materializes a `(rows, slots, width)` tensor and runs 10-20x slower
(`../shared/KERAS_NOTES.md`, "How XLA on a CPU takes sparse ops").
A data-dependent encoder (gated, ReLU, JumpReLU) passes `active_slots`,
the largest support of a row in the batch: the slots from there on hold, in
every row, entries outside the support, whose value is 0 and whose gradient
is 0 (the invariant the whole sparse path rests on), so each loop stops
there; its trip count follows the batch's support, not the static cap. When
the step has ordered the rows by support size (`Selection.by_support_size`)
`active_slots` holds one end per block of rows (`row_blocks`), so the loops
pay about for the mean support rather than for the busiest row.
While `host.using(True)` is in effect (a JAX step on a CPU,
`compile(sparse_kernels=...)`), each loop here and the top-k hand over to
the Numba loops of `host`, which split the rows over every core.
Sums run in float32 whatever the compute dtype, and a result is rounded to
the dtype the dense matmul would have given (bfloat16 under
`mixed_bfloat16`), so the sparse path keeps the dense path's numerics.

- `sparse_decode`: `sum_s values[:, s] * W[indices[:, s]]`, the decoder.
- `gathered_product`: the slots of `inputs @ W` (the encoder's matmul,
  computed densely once, outside the gradient), with a gradient only
  through those slots.
- `gather_vector`: `vector[indices]` for a per-latent parameter, its
  gradient a dense `(latent_dim,)` scatter-add.
"""

import keras
from keras import ops

from gated_sae_layers.sparse import host


def _float32(tensor):
    return ops.cast(tensor, "float32")


def _rounded(tensor, dtype):
    """`tensor` rounded to `dtype` (a float32 value stays float32 when `dtype` is)."""
    return ops.cast(tensor, dtype)


def row_blocks(rows, active_slots, slots):
    """`[(start, stop, end)]`: the blocks of rows a loop runs over, and each one's end.

    `active_slots` `None`: one block, all `slots`. A scalar: one block, the
    first `active_slots` slots. A `(blocks,)` vector (rows ordered by
    support size, `Selection.by_support_size`): block `b` is rows
    `[b * size, (b + 1) * size)` with `size = ceil(rows / blocks)`, its loop
    ending at `active_slots[b]`; with no static row count, one block to
    the largest of them. `start`/`stop` are `None` for the whole batch.
    """
    if active_slots is None:
        return [(None, None, slots)]
    active_slots = ops.cast(active_slots, "int32")
    if len(active_slots.shape) == 0 or rows is None or active_slots.shape[0] == 1:
        return [(None, None, ops.minimum(ops.max(active_slots), slots))]
    size = -(-rows // active_slots.shape[0])
    return [(start, min(start + size, rows), ops.minimum(active_slots[block], slots))
            for block, start in enumerate(range(0, rows, size))]


def _rows_of(tensor, start, stop):
    return tensor if start is None else tensor[start:stop]


def _concatenated(parts):
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)


def _slot_major(tensor):
    """`(rows, slots)` -> `(slots, rows)`: slot `s` is row `s`, read in place."""
    return ops.transpose(tensor)


def weighted_row_sum(table, indices, weights, table_dtype=None, active_slots=None):
    """`out[r] = sum_s weights[r, s] * table[indices[r, s]]`, in float32.

    Args:
        table: `(num_rows, width)`.
        indices: `(rows, slots)` ints in `[0, num_rows)`.
        weights: `(rows, slots)`.
        table_dtype: `None` or the dtype each gathered row is rounded to
            first (the dtype the dense matmul reads the table in).
        active_slots: `None`, an int32 scalar (only the first
            `active_slots` slots are summed; the rest have weight 0), or a
            `(blocks,)` int32 vector, one end per block of rows
            (`row_blocks`).

    Returns:
        `(rows, width)` float32.
    """
    rows, width, slots = ops.shape(indices)[0], table.shape[-1], indices.shape[1]
    if slots == 0:
        return ops.zeros((rows, width), "float32")
    if host.active(table.dtype) and table_dtype in (None, "float32"):
        return host.weighted_row_sum(table, indices, _float32(weights), active_slots)
    parts = []
    for start, stop, end in row_blocks(indices.shape[0], active_slots, slots):
        slot_indices = _slot_major(_rows_of(indices, start, stop))
        slot_weights = _slot_major(_float32(_rows_of(weights, start, stop)))

        def add_slot(slot, total, slot_indices=slot_indices, slot_weights=slot_weights):
            gathered = ops.take(table, ops.take(slot_indices, slot, axis=0), axis=0)
            if table_dtype is not None:
                gathered = ops.cast(gathered, table_dtype)
            weight = ops.take(slot_weights, slot, axis=0)
            return total + weight[:, None] * _float32(gathered)

        block_rows = rows if start is None else stop - start
        parts.append(ops.fori_loop(0, end, add_slot,
                                   ops.zeros((block_rows, width), "float32")))
    return _concatenated(parts)


def row_dots(table, indices, vectors, table_dtype=None, active_slots=None):
    """`out[r, s] = table[indices[r, s]] . vectors[r]`, in float32.

    Args:
        table: `(num_rows, width)`.
        indices: `(rows, slots)`.
        vectors: `(rows, width)`.
        table_dtype, active_slots: as `weighted_row_sum` (the slots from
            `active_slots` on get 0).

    Returns:
        `(rows, slots)` float32.
    """
    vectors = _float32(vectors)
    rows, slots = ops.shape(indices)[0], indices.shape[1]
    if slots == 0:
        return ops.zeros((rows, 0), "float32")
    if host.active(table.dtype) and table_dtype in (None, "float32"):
        return host.row_dots(table, indices, vectors, active_slots)
    parts = []
    for start, stop, end in row_blocks(indices.shape[0], active_slots, slots):
        slot_major = _slot_major(_rows_of(indices, start, stop))
        block_vectors = _rows_of(vectors, start, stop)

        # Each slot's column is written in place into the carried result:
        # every loop here is a `fori_loop` (TensorFlow's `scan` keeps
        # TensorLists, which its XLA fails to compile inside a `cond`:
        # "TensorList is not initialized").
        def dot_slot(slot, dots, slot_major=slot_major, block_vectors=block_vectors):
            gathered = ops.take(table, ops.take(slot_major, slot, axis=0), axis=0)
            if table_dtype is not None:
                gathered = ops.cast(gathered, table_dtype)
            column = ops.sum(_float32(gathered) * block_vectors, axis=-1)
            return ops.slice_update(dots, (slot, 0), ops.expand_dims(column, 0))

        block_rows = rows if start is None else stop - start
        dots = ops.fori_loop(0, end, dot_slot, ops.zeros((slots, block_rows), "float32"))
        parts.append(ops.transpose(dots))
    return _concatenated(parts)


def scatter_rows(indices, weights, vectors, num_rows, active_slots=None):
    """`out[j] = sum over (r, s) with indices[r, s] == j of weights[r, s] * vectors[r]`.

    The transpose of `weighted_row_sum`: a `(num_rows, width)` float32
    gradient built by one in-place scatter-add of `(rows, width)` per slot.

    Args:
        indices: `(rows, slots)` ints in `[0, num_rows)`.
        weights: `(rows, slots)`.
        vectors: `(rows, width)`.
        num_rows: int, the rows of the result.
        active_slots: as `weighted_row_sum`.

    Returns:
        `(num_rows, width)` float32.
    """
    vectors = _float32(vectors)
    width, slots = vectors.shape[-1], indices.shape[1]
    total = ops.zeros((num_rows, width), "float32")
    if slots == 0:
        return total
    if host.active():
        return host.scatter_rows(indices, _float32(weights), vectors, num_rows, active_slots)
    for start, stop, end in row_blocks(indices.shape[0], active_slots, slots):
        slot_indices = _slot_major(_rows_of(indices, start, stop))
        slot_weights = _slot_major(_float32(_rows_of(weights, start, stop)))
        block_vectors = _rows_of(vectors, start, stop)

        def add_slot(slot, total, slot_indices=slot_indices, slot_weights=slot_weights,
                     block_vectors=block_vectors):
            update = ops.take(slot_weights, slot, axis=0)[:, None] * block_vectors
            rows_of_slot = ops.expand_dims(ops.take(slot_indices, slot, axis=0), -1)
            return total + ops.scatter(rows_of_slot, update, (num_rows, width))

        total = ops.fori_loop(0, end, add_slot, total)
    return total


def _upstream(args, upstream):
    if upstream is None:
        (upstream,) = args
    return upstream


def sparse_decode(values, indices, kernel, compute_dtype, kernel_trainable=True,
                  active_slots=None):
    """The decoder on slots: `out[r] = sum_s values[r, s] * kernel[indices[r, s]]`.

    Equal to `dense(values) @ kernel` with `kernel` read in `compute_dtype`,
    without the dense `(rows, num_latents)` tensor or its matmul. Gradients:
    `d values[r, s] = upstream[r] . kernel[indices[r, s]]` and
    `d kernel[j] = sum_{(r, s): indices[r, s] = j} values[r, s] * upstream[r]`
    (rounded to `compute_dtype`, as the dense matmul's gradient is).

    Args:
        values: `(rows, slots)`, compute dtype.
        indices: `(rows, slots)` int32.
        kernel: `(num_latents, width)` tensor (not a variable), `W_dec`.
        compute_dtype: the dtype of the matmul the dense decoder runs.
        kernel_trainable: `False` passes no gradient to `kernel` (the frozen
            decoder of the gated SAE's auxiliary term).
        active_slots: `None`, or an int32 scalar or `(blocks,)` vector: the
            slots that can hold a nonzero entry in some row (of each block of
            rows; see the module docstring and `row_blocks`).

    Returns:
        `(rows, width)` in `compute_dtype`.

    Example:

    >>> import numpy as np
    >>> kernel = np.eye(3, 2, dtype="float32")
    >>> out = sparse_decode(np.array([[2.0, 5.0]], "float32"),
    ...                     np.array([[1, 2]], "int32"), kernel, "float32")
    >>> np.asarray(out).tolist()
    [[0.0, 2.0]]
    """
    num_latents = kernel.shape[0]

    # Every tensor goes in as an argument (the integer and frozen ones with no
    # gradient): a custom gradient that closes over outer tensors fails inside
    # a JAX `cond`.
    end, loop_end = _slot_count(indices, active_slots)

    def forward(values, kernel, indices, end):
        return ops.cast(weighted_row_sum(kernel, indices, values, compute_dtype,
                                         loop_end(end)), compute_dtype)

    def values_gradient(upstream, kernel, indices, end):
        return ops.cast(row_dots(kernel, indices, upstream, compute_dtype, loop_end(end)),
                        values.dtype)

    if not kernel_trainable:
        @ops.custom_gradient
        def decode_frozen(values, kernel, indices, end):
            def grad(*args, upstream=None):
                return (values_gradient(_upstream(args, upstream), kernel, indices, end),
                        None, None, None)

            return forward(values, kernel, indices, end), grad

        return decode_frozen(values, ops.stop_gradient(kernel), indices, end)

    @ops.custom_gradient
    def decode(values, kernel, indices, end):
        def grad(*args, upstream=None):
            upstream = _upstream(args, upstream)
            kernel_gradient = scatter_rows(indices, values, upstream, num_latents,
                                           loop_end(end))
            return (values_gradient(upstream, kernel, indices, end),
                    ops.cast(_rounded(kernel_gradient, compute_dtype), kernel.dtype),
                    None, None)

        return forward(values, kernel, indices, end), grad

    return decode(values, kernel, indices, end)


class Centered:
    """The encoder's input `inputs - bias`, kept as its two parts.

    The sparse path hands this to the encoder instead of the centered
    tensor, so that `gathered_product` can give `bias` (the decoder's
    `b_dec`) its gradient as one matrix-vector product,
    `-W_enc @ sum_r d z[r]`, instead of a `(rows, input_dim)` gradient built
    from gathered columns of `W_enc` and then summed.

    Args:
        inputs: `(rows, input_dim)`, the model input (compute dtype).
        bias: `(input_dim,)`, `b_dec` (compute dtype).
    """

    __slots__ = ("inputs", "bias")

    def __init__(self, inputs, bias):
        self.inputs = inputs
        self.bias = bias

    @property
    def shape(self):
        return tuple(self.inputs.shape)

    @property
    def dtype(self):
        return self.inputs.dtype

    def materialize(self):
        """The tensor `inputs - bias`, as `UnitNormDecoder(mode="center")` gives it."""
        return self.inputs - self.bias


def _slot_count(indices, active_slots):
    """`(end, loop_end)`: the int32 tensor of the slots the loops visit, a custom
    gradient's argument (a scalar, or one per block of rows: `row_blocks`), and
    `loop_end(end)`, what the loops get: `None` when every slot is visited, so
    that they keep a static trip count (TopK)."""
    slots = indices.shape[1]
    if active_slots is None:
        return ops.convert_to_tensor(slots, "int32"), lambda end: None
    return ops.minimum(ops.cast(active_slots, "int32"), slots), lambda end: end


def _kernel_gradient(indices, upstream, centered, kernel, end=None):
    """`d kernel` of the slots: one scatter-add over rows of the transposed kernel."""
    if host.active():
        return ops.cast(host.scatter_columns(indices, _float32(upstream), _float32(centered),
                                             kernel.shape[-1], end), kernel.dtype)
    rows_gradient = scatter_rows(indices, upstream, centered, kernel.shape[-1], end)
    return ops.cast(ops.transpose(rows_gradient), kernel.dtype)


def gathered_product(inputs, kernel, indices, product, active_slots=None, at_slots=None):
    """The slots of `inputs @ kernel`, differentiable through those slots only.

    `product` is `inputs @ kernel`, computed once, densely and without
    gradient (the encoder's forward matmul); this returns
    `product[r, indices[r, s]]` with the gradient of the dense matmul
    restricted to the slots:

    ```
    d kernel[:, j] = sum_{(r, s): indices[r, s] = j} upstream[r, s] * inputs[r]
    d inputs[r]    = sum_s upstream[r, s] * kernel[:, indices[r, s]]
    ```

    Both are scatters/gathers over rows of the transposed kernel; neither
    is a `(rows, num_latents)` tensor or a dense matmul. When `inputs` is a
    `Centered` (`x - b_dec`), `b_dec` gets `-kernel @ sum_r scatter(upstream[r])`
    and `x` the gradient above (which XLA drops when nothing needs it).

    Args:
        inputs: `(rows, input_dim)`, the encoder's (centered) input, or a
            `Centered`.
        kernel: `(input_dim, num_latents)` tensor (not a variable), as the
            encoder reads it (compute dtype).
        indices: `(rows, slots)` int32.
        product: `(rows, num_latents)`, `inputs @ kernel` (no gradient).
        active_slots: `None`, or an int32 scalar or `(blocks,)` vector: the
            gradient loops visit only the first `active_slots` slots (of each
            block of rows; the upstream gradient is 0 past them; see the
            module docstring and `row_blocks`).
        at_slots: `None`, or `product[r, indices[r, s]]` already gathered
            (`(rows, slots)`, no gradient; `Selection.product_at_slots`):
            then `product` is not read and may be `None`.

    Returns:
        `(rows, slots)`, in the dtype of `product`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0]], "float32")
    >>> w = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 1.0]], "float32")
    >>> out = gathered_product(x, w, np.array([[2, 0]], "int32"), x @ w)
    >>> np.asarray(out).tolist()
    [[5.0, 1.0]]
    """
    num_latents = kernel.shape[-1]

    end, loop_end = _slot_count(indices, active_slots)

    def inputs_gradient(upstream, kernel, indices, dtype, end):
        return ops.cast(weighted_row_sum(ops.transpose(kernel), indices, upstream,
                                         active_slots=loop_end(end)), dtype)

    if at_slots is not None:
        product = at_slots

        def forward(product, indices):
            return ops.copy(product)
    else:
        def forward(product, indices):
            return ops.take_along_axis(product, indices, axis=1)

    if isinstance(inputs, Centered):
        @ops.custom_gradient
        def slots_of_centered_product(x, bias, kernel, indices, product, end):
            def grad(*args, upstream=None):
                upstream = _upstream(args, upstream)
                column_sums = ops.scatter(ops.reshape(indices, (-1, 1)),
                                          ops.reshape(_float32(upstream), (-1,)),
                                          (num_latents,))
                bias_gradient = -ops.matmul(_float32(kernel), column_sums)
                return (inputs_gradient(upstream, kernel, indices, x.dtype, end),
                        ops.cast(bias_gradient, bias.dtype),
                        _kernel_gradient(indices, upstream, x - bias, kernel,
                                         loop_end(end)),
                        None, None, None)

            return forward(product, indices), grad

        return slots_of_centered_product(inputs.inputs, inputs.bias, kernel, indices,
                                         ops.stop_gradient(product), end)

    @ops.custom_gradient
    def slots_of_product(inputs, kernel, indices, product, end):
        def grad(*args, upstream=None):
            upstream = _upstream(args, upstream)
            return (inputs_gradient(upstream, kernel, indices, inputs.dtype, end),
                    _kernel_gradient(indices, upstream, inputs, kernel, loop_end(end)),
                    None, None, None)

        return forward(product, indices), grad

    return slots_of_product(inputs, kernel, indices, ops.stop_gradient(product), end)


def gather_vector(vector, indices):
    """`vector[indices]` whose gradient is a dense `(num_latents,)` scatter-add.

    (TensorFlow's own gather gradient is an `IndexedSlices`, which the
    finiteness checks and some optimizers do not take.)

    Args:
        vector: `(num_latents,)` tensor (not a variable).
        indices: int tensor of any shape.

    Returns:
        A tensor of the shape of `indices`.
    """
    num_latents = vector.shape[0]

    @ops.custom_gradient
    def take(vector, indices):
        def grad(*args, upstream=None):
            upstream = _upstream(args, upstream)
            return ops.cast(ops.scatter(ops.reshape(indices, (-1, 1)),
                                        ops.reshape(_float32(upstream), (-1,)),
                                        (num_latents,)), vector.dtype), None

        return ops.take(vector, indices, axis=0), grad

    return take(vector, indices)


def as_tensor(value):
    """A tensor: TensorFlow's `custom_gradient` rejects variables read inside it."""
    if isinstance(value, keras.Variable):
        return ops.convert_to_tensor(value)
    return value
