"""Benchmarks of the kit, run from the repository root with `python -m`.

* `benchmarks.throughput`: training samples/s of the kit's `fit` against
  hand-written JAX/PyTorch steps and the peer projects
  (`python -m benchmarks.throughput`), and its companions
  `benchmarks.throughput.sparse_scale`, `.step_memory`, `.stream`.
* `benchmarks.quality`: training quality at equal budget against the peers
  (`python -m benchmarks.quality`), and `benchmarks.quality.ground_truth`,
  `.pareto`, `.target_l0`, `.minilm_activations`.
* `benchmarks.common`: the machine, Markdown tables, figure and cache folders.
* `benchmarks.jax_backend`, `benchmarks.tensorflow_backend`,
  `benchmarks.quiet_logs`: imported first by an entry module, before anything
  that imports keras (the backend is fixed when keras is imported).

Results: `benchmarks/RESULTS.md` (an index of `throughput/RESULTS.md` and
`quality/RESULTS.md`); figures and their JSON in `benchmarks/figures/`.
Nothing here is part of the installed package.
"""
