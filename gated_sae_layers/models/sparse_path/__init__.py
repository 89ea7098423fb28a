"""The sparse training path of `SparseAutoencoder` (`docs/sparse_training.md`).

`plan` decides whether a model trains on it (`compile(sparse=...)`),
`graph` runs the model's graph on slots, `step` computes a step's loss and
gradients (falling back to the dense step when a row's support exceeds its
slots), `cap` adapts the slots of data-dependent encoders to the data.
"""
