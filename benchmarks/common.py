"""What every benchmark shares: the machine, Markdown tables, files.

* `machine_info()`: CPU model and count, memory, the GPUs `nvidia-smi -L`
  lists (no framework import), Python and numpy versions and the date;
  `machine_lines(info)` says it in two lines, `machine_summary(info)` in a
  title's few words; `framework_versions()` adds keras, its backend and
  TensorFlow.
* `markdown_table(header, rows, align)`: cells already formatted;
  `column_table(rows, columns)`: dict rows formatted column by column;
  `fmt`, `fmt_bytes`: one cell.
* `cache_dir()` (harvested activations, outside the repository),
  `figures_dir()` (`benchmarks/figures`, or `$SAE_BENCH_FIGURES`) and
  `write_json(path, payload)` (written whole, then renamed into place).

Example:

    >>> print(markdown_table(["what", "rows/s"], [["stream", "1,024"]]))
    | what | rows/s |
    |---|---:|
    | stream | 1,024 |
"""

import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess

import numpy as np

BENCH_DIR = pathlib.Path(__file__).resolve().parent
GIB = 2.0**30


# ---------------------------------------------------------------- machine
def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def cpu_model():
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib():
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return None


def nvidia_gpus():
    """GPU names from `nvidia-smi -L` (no framework import); [] if none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.startswith("GPU")]


def machine_info():
    """The machine a benchmark runs on, as a JSON-ready dict."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpus = nvidia_gpus()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "gpu_present": bool(gpus),
        "gpus": gpus,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"),
    }


def machine_lines(info):
    """`CPU: ...` and one `GPU: ...` line per GPU (or `GPU: none ...`)."""
    mem = f"{info['memory_gib']:.1f} GiB" if info["memory_gib"] else "unknown"
    lines = [f"CPU: {info['cpu_model']}, {info['cpu_count']} logical CPUs "
             f"({info['cpu_usable']} usable), memory {mem}"]
    if info["gpu_present"]:
        lines += [f"GPU: {gpu}" for gpu in info["gpus"]]
    else:
        lines.append("GPU: none (nvidia-smi absent or lists no GPU)")
    return lines


def machine_summary(info):
    """`date; N CPUs, model, M GiB`: a benchmark's title line."""
    return (f"{info['date']}; {info['cpu_count']} CPUs, {info['cpu_model']}, "
            f"{fmt(info['memory_gib'], '.1f')} GiB")


def framework_versions():
    """keras, its backend and TensorFlow (`None` where not installed)."""
    import keras

    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except ImportError:
        tf_version = None
    return {"keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tf_version}


# ----------------------------------------------------------------- tables
def markdown_table(header, rows, align=None):
    """A Markdown table of already formatted cells.

    `align` holds one `"l"` or `"r"` per column; by default the first
    column is left-aligned and the others right-aligned (numbers).
    """
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def column_table(rows, columns):
    """`columns`: (header, key, format) triples, format a spec or a callable.

    A row without the key (or with `None`) gets an empty cell.
    """
    def cell(value, spec):
        if value is None:
            return ""
        return spec(value) if callable(spec) else format(value, spec)

    return markdown_table([header for header, _, _ in columns],
                          [[cell(row.get(key), spec) for _, key, spec in columns]
                           for row in rows])


def fmt(value, spec, suffix=""):
    return "-" if value is None else format(value, spec) + suffix


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, scale in (("GiB", GIB), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


# ------------------------------------------------------------------ files
def cache_dir():
    """`$GATED_SAE_CACHE`, else `$XDG_CACHE_HOME/gated_sae_layers` (~/.cache)."""
    root = os.environ.get("GATED_SAE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
        "gated_sae_layers")
    return pathlib.Path(root)


def figures_dir():
    """`$SAE_BENCH_FIGURES`, else `benchmarks/figures` (created)."""
    path = pathlib.Path(os.environ.get("SAE_BENCH_FIGURES") or BENCH_DIR / "figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path, payload, indent=2):
    """Writes `payload` to `path` whole (a temporary file, then a rename)."""
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=indent)
        os.replace(tmp, path)
