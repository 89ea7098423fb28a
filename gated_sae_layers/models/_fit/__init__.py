"""The private helpers behind `SparseAutoencoder.fit` (and `evaluate`, `predict`).

| module            | what it owns                                              |
|-------------------|-----------------------------------------------------------|
| `run`             | `fit`'s body: arguments, data checks, which loop runs     |
| `arguments`       | `fit`'s arguments bound by name                           |
| `finite_step`     | the train step that skips non-finite updates, its callback|
| `recovery`        | what `fit` leaves behind when it raises                   |
| `device_resident` | the JAX fast path: data on the device, many steps a call  |
| `device_chunks`   | the device-side chunks of activations that path trains on |

Nothing here is public API; private Keras attributes are reached through
`gated_sae_layers._keras_compat` only.
"""
