"""The tables `python -m benchmarks.throughput` prints, and the ratios in them.

Per size: `results_table` (one row per configuration: samples/s, ms/step,
GFLOP/s counting 7 matmuls, % of the GEMM peak, device memory, our ratio
to the hand-written JAX step and to the faster PyTorch step), `ratio_table`
(our stock fit over every reference and peer at the same precision) and
`memory_table` (measured peak next to the estimate, by part). `add_ratios`
fills the ratios first; `print_size` prints the three tables of a size,
`print_closing` the notes, versions and wall time.
"""

from benchmarks.common import fmt, fmt_bytes, markdown_table
from benchmarks.throughput import reference_steps as ref
from benchmarks.throughput.configs import CONFIGS, FLOAT32
from benchmarks.throughput.peaks import peak_for

RESULTS_HEADER = [
    "config", "implementation", "precision", "device", "samples/s (best)",
    "samples/s (median)", "ms/step", "GFLOP/s (7 mm)", "% of peak",
    "peak device memory (estimate)", "ours / hand-jax", "ours / torch"]


def ok(result):
    return result is not None and "samples_per_s" in result


def add_ratios(results):
    """Fills `ours_over_*` in the rows of ours; returns the ratio matrix."""
    by_name = {r["worker"]: r for r in results}
    matrix = {}
    for r in results:
        config = CONFIGS[r["worker"]]
        if config.kind != "ours" or not ok(r):
            continue
        same = [n for n, x in by_name.items()
                if CONFIGS[n].kind != "ours" and CONFIGS[n].precision == config.precision]
        row = {n: r["samples_per_s"] / by_name[n]["samples_per_s"]
               for n in same if ok(by_name[n])}
        matrix[r["worker"]] = row
        hand = "hand-jax" if config.precision == FLOAT32 else "hand-jax-bf16"
        r["ours_over_hand_jax"] = row.get(hand)
        torches = [n for n in same if CONFIGS[n].family == "torch" and n in row]
        if torches:
            best = min(torches, key=lambda n: row[n])    # the faster torch step
            r["ours_over_torch"], r["torch_compared"] = row[best], best
    return matrix


def _result_cells(r, peaks):
    name = r["worker"]
    config = CONFIGS[name]
    if not ok(r):
        status = ("skipped: " + r["skipped"]) if "skipped" in r else (
            "FAILED: " + r.get("error", "no result"))
        status = status.replace("|", "/").replace("\n", " ")
        return [name, config.what, config.precision, "-", status] + [""] * 7
    label, peak = peak_for(r, peaks)
    frac = 100.0 * r["gflops_7mm"] / peak if peak else None
    r["peak_used"], r["peak_used_gflops"] = label, peak
    r["fraction_of_peak"] = None if frac is None else frac / 100.0
    estimate = r.get("memory_estimate", {}).get("total")
    torch_ratio = r.get("ours_over_torch")
    return [name, config.what, config.precision, r["device"],
            f"{r['samples_per_s']:,.0f}", f"{r['median_samples_per_s']:,.0f}",
            f"{r['ms_per_step']:.2f}", f"{r['gflops_7mm']:,.1f}",
            fmt(frac, ".1f", "%"),
            f"{fmt_bytes(r.get('peak_device_bytes'))} ({fmt_bytes(estimate)})",
            fmt(r.get("ours_over_hand_jax"), ".2f"),
            fmt(torch_ratio, ".2f")
            + (f" ({r['torch_compared']})" if torch_ratio else "")]


def results_table(results, peaks):
    """One row per configuration; records the peak used in each row of ours."""
    return markdown_table(RESULTS_HEADER, [_result_cells(r, peaks) for r in results],
                          align="llll" + "r" * 8)


def ratio_table(matrix):
    refs = []
    for row in matrix.values():
        refs += [n for n in row if n not in refs]
    if not matrix or not refs:
        return ""
    refs.sort(key=list(CONFIGS).index)
    return markdown_table(
        ["ours \\ reference"] + refs,
        [[f"{ours} ({CONFIGS[ours].precision})"] + [fmt(row.get(n), ".2f") for n in refs]
         for ours, row in matrix.items()])


SPARSE_PAIRS = {"jax-sparse": "jax", "tf-xla-sparse": "tf-xla",
                "jax-sparse-bf16": "jax-bf16"}


def sparse_table(results):
    """`sparse / dense` for each sparse configuration whose dense twin ran."""
    by_name = {r["worker"]: r for r in results if ok(r)}
    rows = [[sparse, dense, f"{by_name[sparse]['samples_per_s'] / by_name[dense]['samples_per_s']:.2f}",
             by_name[sparse].get("sparse_path", "")]
            for sparse, dense in SPARSE_PAIRS.items()
            if sparse in by_name and dense in by_name]
    if not rows:
        return ""
    return markdown_table(["sparse", "dense", "sparse / dense", "sparse path"], rows)


def memory_table(results):
    rows = []
    for r in results:
        if not (ok(r) and (r.get("peak_device_bytes") or r.get("xla_memory"))):
            continue
        e = r["memory_estimate"]
        xla = r.get("xla_memory") or {}
        xla_total = (xla.get("argument_size_in_bytes", 0)
                     + xla.get("temp_size_in_bytes", 0)) if xla else None
        rows.append([r["worker"], fmt_bytes(r.get("peak_device_bytes"))]
                    + [fmt_bytes(e[k]) for k in (
                        "total", "weights", "adam", "gradients", "activations")]
                    + [fmt_bytes(xla_total)])
    if not rows:
        return ""
    return markdown_table(["config", "measured peak", "estimate", "weights", "Adam",
                           "gradients", "activations",
                           "XLA step: arguments + temporaries"], rows)


def print_size(entry, peaks):
    """The three tables of one size."""
    step_gflop = ref.flops_per_step(
        entry["batch_size"], entry["input_dim"], entry["latent_dim"],
        ref.FORWARD_MATMULS + ref.BACKWARD_MATMULS) / 1e9
    print(f"\n## {entry['input_dim']} -> {entry['latent_dim']}, batch "
          f"{entry['batch_size']} ({step_gflop:,.2f} GFLOP/step counted, "
          "7 matmuls)\n")
    print(results_table(entry["results"], peaks))
    ratios = ratio_table(entry["ratios"])
    if ratios:
        print("\nOur stock fit / each reference at the same precision "
              "(samples/s ratio; > 1: ours is faster):\n")
        print(ratios)
    speedups = sparse_table(entry["results"])
    if speedups:
        print("\nThe sparse path over the dense step of the same backend and "
              "precision (samples/s ratio):\n")
        print(speedups)
    memory = memory_table(entry["results"])
    if memory:
        print("\nDevice memory, measured peak vs estimate (float32 weights, "
              "Adam moments, gradients, ~8 batch x M activations):\n")
        print(memory)


def versions_of(sizes):
    """`{"keras", "tensorflow", "jax", <config>: library}` seen in the rows."""
    versions = {}
    for entry in sizes:
        for r in entry["results"]:
            for key in ("keras", "tensorflow", "jax"):
                if key in r:
                    versions[key] = r[key]
            if "library" in r:
                versions[r["worker"]] = r["library"]
    return versions


def print_closing(info, versions, total):
    print()
    print("GFLOP/s counts 7 matmuls of 2*B*D*M FLOPs per step (a lower bound); "
          "the compiled graph has 8 (the encoder input gradient feeds b_dec). "
          "% of peak: float32 rows against the float32 GEMM peak (TF32 on a "
          "GPU), bfloat16 rows against the bfloat16 GEMM peak on a GPU and "
          "the float32 numpy peak on a CPU.")
    print("Versions: python " + info["python"] + ", numpy " + info["numpy"]
          + "".join(f"; {k}: {v}" for k, v in sorted(versions.items())))
    print(f"Total wall time {total:.0f} s")
