"""How fast the kit trains: `python -m benchmarks.throughput` and its companions.

Entry points (from the repository root):

    python -m benchmarks.throughput --help     # fit vs hand-written steps and peers
    python -m benchmarks.throughput.sparse_scale {scaling,gated,memory,store}
    python -m benchmarks.throughput.step_memory 2304 131072 --batch 4096
    python -m benchmarks.throughput.stream     # ActivationStore streaming
    python -m benchmarks.throughput.multiplier # the recipe's decoder multiplier

The parts of `python -m benchmarks.throughput` (`__main__`): `configs` (what
runs, presets, `--size`), `parent` (one worker subprocess per group,
`python -m benchmarks.throughput --worker NAMES`), `workers` (the timing in
the subprocess), `peaks` (GEMM peaks), `report` (Markdown tables), `verify`
(the same-math check); `reference_steps` (the hand-written JAX and PyTorch
steps), `peers` (the peer projects' steps) and `devices` (device memory).
Results: `benchmarks/throughput/RESULTS.md`.
"""
