"""Scripts that made the figures and tables of `docs/`, run from the repository root:

    python -m docs.scripts.dashboard_demo {minilm,mnist,timing}
    python -m docs.scripts.evaluation_demo [--skip-minilm]
"""
