"""Which token each activation row came from, to show text around an example."""

import numpy as np

from gated_sae_layers._validation import check_positive_int


class TokenContext:
    """Maps activation rows to the tokens they were harvested from.

    `harvest` turns `(texts, tokens, width)` outputs into rows text by text,
    keeping the positions where `padding_mask` is 1 and whose token id is
    not in `drop_token_ids`. `TokenContext.from_inputs` applies the same
    rule to the tokenizer's inputs, so row `n` is known to be token
    `position[n]` of text `text[n]`:

    ```
    rows = [(t, p) for t in texts for p in positions if keep[t, p]]
    ```

    A page shows, around an example row, the rows of the same text at most
    `window` positions before or after it, each token decoded with the
    tokenizer's `id_to_token` and shaded by the latent's activation there.

    Args:
        token_ids: `(num_texts, sequence_length)` int token ids.
        keep: `(num_texts, sequence_length)` bool, the positions that became
            rows, in row order (row-major).
        tokenizer: a keras_hub tokenizer (anything with `id_to_token(id)`).
        window: int, rows shown on each side of an example.

    Example:

    >>> class Vocabulary:
    ...     def id_to_token(self, token_id):
    ...         return ["[PAD]", "the", "cat", "##s"][token_id]
    >>> context = TokenContext.from_inputs(
    ...     {"token_ids": np.array([[1, 2, 3, 0]]), "padding_mask": np.array([[1, 1, 1, 0]])},
    ...     Vocabulary(), window=1)
    >>> context.num_rows, context.window_rows(2).tolist(), context.tokens([1, 2])
    (3, [1, 2], ['cat', '##s'])
    """

    kind = "text"

    def __init__(self, token_ids, keep, tokenizer, window=8):
        token_ids = np.asarray(token_ids)
        keep = np.asarray(keep)
        if token_ids.ndim != 2 or keep.shape != token_ids.shape:
            raise ValueError(
                "`token_ids` and `keep` must be 2-D arrays of one shape "
                f"(num_texts, sequence_length). Received: token_ids.shape="
                f"{token_ids.shape}, keep.shape={keep.shape}")
        if not callable(getattr(tokenizer, "id_to_token", None)):
            raise TypeError(
                "`tokenizer` must have an `id_to_token` method (a keras_hub "
                f"tokenizer). Received: tokenizer={tokenizer!r:.100}")
        self.tokenizer = tokenizer
        self.window = check_positive_int(window, "window")
        text, position = np.nonzero(keep.astype(bool))
        self.row_text, self.row_position = text, position
        self.row_token = token_ids[text, position].astype("int64")
        self._decoded = {}

    @classmethod
    def from_inputs(cls, inputs, tokenizer, drop_token_ids=(), window=8):
        """From a preprocessor's output `{"token_ids", "padding_mask", ...}`
        and the `drop_token_ids` given to `harvest` (padding is dropped)."""
        if not isinstance(inputs, dict) or "token_ids" not in inputs:
            raise TypeError(
                "`inputs` must be the dict a keras_hub preprocessor returns, with "
                f"`token_ids` (and `padding_mask`). Received: {type(inputs).__name__}")
        token_ids = np.asarray(inputs["token_ids"])
        keep = np.ones(token_ids.shape, bool)
        if "padding_mask" in inputs:
            keep &= np.asarray(inputs["padding_mask"]).astype(bool)
        if len(drop_token_ids):
            keep &= ~np.isin(token_ids, list(drop_token_ids))
        return cls(token_ids, keep, tokenizer, window)

    @property
    def num_rows(self):
        """The number of activation rows the inputs make."""
        return len(self.row_token)

    def window_rows(self, row):
        """The rows of `row`'s text within `window` rows of it, in order."""
        start = max(row - self.window, 0)
        rows = np.arange(start, min(row + self.window + 1, self.num_rows))
        return rows[self.row_text[rows] == self.row_text[row]]

    def tokens(self, rows):
        """The decoded token of each row."""
        return [self._token(int(self.row_token[row])) for row in rows]

    def _token(self, token_id):
        if token_id not in self._decoded:
            self._decoded[token_id] = str(self.tokenizer.id_to_token(token_id))
        return self._decoded[token_id]

    def example(self, row, rows, activations, pixels=None):
        """A page's JSON for one example: tokens, activations, the center."""
        del pixels
        return {"row": int(row), "tokens": self.tokens(rows),
                "acts": [float(f"{a:.4g}") for a in activations],
                "center": int(np.flatnonzero(np.asarray(rows) == row)[0])}

    def decoder_image(self, decoder_row):
        """Text has no image of a decoder row."""
        del decoder_row

    def label(self, rows):
        """A short description of a latent from its top rows: their tokens."""
        seen = []
        for token in self.tokens(rows):
            if token not in seen:
                seen.append(token)
        return " ".join(seen[:4])
