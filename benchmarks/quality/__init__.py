"""How well the kit trains: `python -m benchmarks.quality` and its companions.

Entry points (from the repository root):

    python -m benchmarks.quality --help              # ours vs the peers, equal budget
    python -m benchmarks.quality.ground_truth        # synthetic known directions
    python -m benchmarks.quality.pareto --dataset mnist
    python -m benchmarks.quality.target_l0           # TargetL0 against a fixed sweep
    python -m benchmarks.quality.minilm_activations  # harvest the MiniLM rows once

Parts: `peers` (the peer trainers of `python -m benchmarks.quality`) and
`sweep` (train one SAE per architecture and knob, score it; shared by
`ground_truth`, `pareto` and `docs/scripts/evaluation_demo.py`).
Results: `benchmarks/quality/RESULTS.md`.
"""
