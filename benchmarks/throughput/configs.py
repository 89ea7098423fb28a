"""What `python -m benchmarks.throughput` times: configurations, presets, `--size`.

A configuration says what runs (the kit's `fit`, a reference step by hand,
or a peer project), under which Keras backend its process starts, and at
which precision. `parse_configs` expands `--configs`, `parse_sizes` reads
`--size` (`DxM`, `DxM@B` or `DxM@B:PRECISION`), `process_groups` says which
configurations may share one worker process.

Example:

    >>> CONFIGS["hand-jax-bf16"].family, CONFIGS["hand-jax-bf16"].precision
    ('hand-jax', 'bfloat16')
    >>> process_groups(["jax", "hand-jax", "hand-jax-bf16"], share=True)
    [['jax'], ['hand-jax', 'hand-jax-bf16']]
"""

import collections
import re

from benchmarks.throughput import reference_steps as ref

FLOAT32, BFLOAT16 = ref.PRECISIONS

Config = collections.namedtuple(
    "Config", "kind family backend precision what options")
CONFIGS = {
    # ours: the kit's stock model.fit, on the dense step (compile(sparse=False))
    "tf": Config("ours", "tf", "tensorflow", FLOAT32, "kit fit, TF graph",
                 {"jit": False}),
    "tf-xla": Config("ours", "tf-xla", "tensorflow", FLOAT32, "kit fit, TF + XLA",
                     {"jit": True}),
    "jax": Config("ours", "jax", "jax", FLOAT32, "kit fit, JAX", {"jit": True}),
    "jax-bf16": Config("ours", "jax-bf16", "jax", BFLOAT16,
                       "kit fit, JAX, mixed_bfloat16", {"jit": True}),
    # ours on the sparse path (compile(sparse=True))
    "tf-xla-sparse": Config("ours", "tf-xla-sparse", "tensorflow", FLOAT32,
                            "kit fit, TF + XLA, sparse path",
                            {"jit": True, "sparse": True}),
    "jax-sparse": Config("ours", "jax-sparse", "jax", FLOAT32,
                         "kit fit, JAX, sparse path (Numba kernels where installed)",
                         {"jit": True, "sparse": True}),
    "jax-sparse-xla": Config("ours", "jax-sparse-xla", "jax", FLOAT32,
                             "kit fit, JAX, sparse path, keras.ops kernels",
                             {"jit": True, "sparse": True, "kernels": "xla"}),
    "jax-sparse-bf16": Config("ours", "jax-sparse-bf16", "jax", BFLOAT16,
                              "kit fit, JAX, mixed_bfloat16, sparse path",
                              {"jit": True, "sparse": True}),
    # ours with the device-resident input path turned off (Keras's own loop)
    "jax-stock": Config("ours", "jax-stock", "jax", FLOAT32,
                        "kit fit, JAX, device_resident=False",
                        {"jit": True, "resident": False}),
    "jax-stock-bf16": Config("ours", "jax-stock-bf16", "jax", BFLOAT16,
                             "kit fit, JAX, mixed_bfloat16, device_resident=False",
                             {"jit": True, "resident": False}),
    # ours without fit: Keras's compiled train_step in a lax.scan, data on device
    "jax-scan": Config("ours", "jax-scan", "jax", FLOAT32,
                       "kit train_step in lax.scan (no fit)",
                       {"jit": True, "scan": True}),
    "jax-scan-bf16": Config("ours", "jax-scan-bf16", "jax", BFLOAT16,
                            "kit train_step in lax.scan, mixed_bfloat16",
                            {"jit": True, "scan": True}),
    # references: the same step by hand
    "hand-jax": Config("reference", "hand-jax", "jax", FLOAT32,
                       "jax.jit step by hand", {}),
    "hand-jax-bf16": Config("reference", "hand-jax", "jax", BFLOAT16,
                            "jax.jit step by hand, bf16 matmuls", {}),
    "torch": Config("reference", "torch", "jax", FLOAT32, "PyTorch eager",
                    {"compile": False}),
    "torch-bf16": Config("reference", "torch", "jax", BFLOAT16,
                         "PyTorch eager, autocast bf16", {"compile": False}),
    "torch-compile": Config("reference", "torch", "jax", FLOAT32,
                            "PyTorch torch.compile", {"compile": True}),
    "torch-compile-bf16": Config("reference", "torch", "jax", BFLOAT16,
                                 "PyTorch torch.compile, autocast bf16",
                                 {"compile": True}),
    # peers: other projects' gated SAEs, as shipped
    "saelens": Config("peer", "saelens", "jax", FLOAT32,
                      "SAELens SAETrainer.step", {}),
    "saelens-bf16": Config("peer", "saelens", "jax", BFLOAT16,
                           "SAELens SAETrainer.step, autocast", {}),
    "dictionary-learning": Config("peer", "dictionary-learning", "jax", FLOAT32,
                                  "dictionary_learning GatedSAETrainer", {}),
    "dictionary-learning-bf16": Config(
        "peer", "dictionary-learning", "jax", BFLOAT16,
        "dictionary_learning GatedSAETrainer, autocast", {}),
    # peers of the TopK SAE (--architecture topk)
    "sparsify": Config("peer", "sparsify", "jax", FLOAT32,
                       "sparsify (eai-sparsify) Trainer step", {}),
    "saelens-topk": Config("peer", "saelens-topk", "jax", FLOAT32,
                           "SAELens TopKTrainingSAE, SAETrainer.step", {}),
    "gated-sae-tf": Config("peer", "gated-sae-tf", "tensorflow", FLOAT32,
                           "gated-sae-tf fit", {"jit": "auto"}),
    "gated-sae-tf-xla": Config("peer", "gated-sae-tf", "tensorflow", FLOAT32,
                               "gated-sae-tf fit, XLA", {"jit": True}),
}
ARCHITECTURE_ONLY = {"sparsify": "topk", "saelens-topk": "topk", "saelens": "gated",
                     "dictionary-learning": "gated", "gated-sae-tf": "gated",
                     "hand-jax": "gated", "torch": "gated"}
"""Families that exist for one architecture only (the others skip them)."""
PRESETS = {
    "kit": ["tf", "tf-xla", "jax", "jax-bf16", "jax-stock", "jax-stock-bf16",
            "jax-scan", "jax-scan-bf16"],
    "sparse": ["jax", "jax-sparse", "jax-sparse-xla", "tf-xla", "tf-xla-sparse",
               "jax-bf16", "jax-sparse-bf16"],
    "topk": ["jax", "jax-sparse", "jax-sparse-xla", "tf-xla", "tf-xla-sparse", "sparsify",
             "saelens-topk"],
    "refs": ["hand-jax", "hand-jax-bf16", "torch", "torch-bf16",
             "torch-compile", "torch-compile-bf16"],
    "peers": ["saelens", "saelens-bf16", "dictionary-learning",
              "dictionary-learning-bf16", "gated-sae-tf", "gated-sae-tf-xla"],
}
PRESETS["peers"] += ["sparsify", "saelens-topk"]
PRESETS["all"] = PRESETS["kit"] + PRESETS["refs"] + PRESETS["peers"]
PRESETS["gpu"] = [c for c in PRESETS["all"] + PRESETS["sparse"]
                  if CONFIGS[c].backend != "tensorflow"]
PRESETS["gpu"] = list(dict.fromkeys(PRESETS["gpu"]))
SIZE_RE = re.compile(r"^(\d+)x(\d+)(?:@(\d+))?(?::(float32|bfloat16|bf16|f32))?$")


def parse_configs(text, parser):
    """The config names `--configs` asks for, presets expanded, in order."""
    names = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        expanded = PRESETS.get(item, [item])
        for name in expanded:
            if name not in CONFIGS:
                parser.error(f"--configs takes names from {', '.join(CONFIGS)} and "
                             f"presets {', '.join(PRESETS)}. Received: {item!r}")
            if name not in names:
                names.append(name)
    if not names:
        parser.error(f"--configs is empty. Received: {text!r}")
    return names


def parse_sizes(args, parser):
    """`[{"input_dim", "latent_dim", "batch_size", "precision"}, ...]` of `--size`."""
    specs = args.size.split(",") if args.size else [
        f"{args.input_dim}x{args.latent_dim}"]
    sizes = []
    for spec in specs:
        match = SIZE_RE.match(spec.strip())
        if not match:
            parser.error("--size takes DxM, DxM@B or DxM@B:PRECISION (PRECISION "
                         f"float32 or bfloat16), comma-separated. Received: {spec!r}")
        d, m, b, precision = match.groups()
        precision = {"bf16": BFLOAT16, "f32": FLOAT32}.get(precision, precision)
        sizes.append({"input_dim": int(d), "latent_dim": int(m),
                      "batch_size": int(b) if b else args.batch_size,
                      "precision": precision})
    return sizes


def size_tag(size):
    """`DxM@B` of a mapping with `input_dim`, `latent_dim`, `batch_size`."""
    return f"{size['input_dim']}x{size['latent_dim']}@{size['batch_size']}"


def process_groups(names, share):
    """Consecutive runs of configs that may share one worker process."""
    groups = []
    for name in names:
        config = CONFIGS[name]
        shareable = share and config.kind != "ours"
        if (shareable and groups and CONFIGS[groups[-1][0]].kind != "ours"
                and CONFIGS[groups[-1][0]].family == config.family):
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups
