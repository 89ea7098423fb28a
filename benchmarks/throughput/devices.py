"""Which device each framework trains on, and how much of its memory a step used.

The timed steps (`reference_steps`, `peers`, the kit's workers in
`workers`) report the same fields, from here:

* `device`: `"cpu"`, `"gpu"` or `"cuda"`; `device_detail`: its name;
* `peak_device_bytes`: the device's peak allocation during the step
  (`None` on a CPU, or where the framework keeps no figures).

Every framework is imported inside the function that needs it, so a worker
loads only its own.
"""


# -------------------------------------------------------------------- JAX
def jax_memory(device):
    """`device.memory_stats()`, or `{}` where the backend has no figures."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has figures
        stats = None
    return stats or {}


def jax_peak_since(device, before):
    """The device's peak bytes, or None if there are no figures or an earlier
    config in this process already set a higher peak."""
    peak = jax_memory(device).get("peak_bytes_in_use")
    if peak is None or peak <= before.get("peak_bytes_in_use", -1):
        return None
    return int(peak)


# ------------------------------------------------------------- TensorFlow
def tensorflow_device():
    """`{"device", "device_detail"}` of TensorFlow: its GPUs, else the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {"device": "gpu" if gpus else "cpu",
            "device_detail": ", ".join(d.name for d in gpus) or "CPU"}


# ---------------------------------------------------------------- PyTorch
def torch_device(requested=None):
    """`requested`, else `"cuda"` where torch sees a GPU, else `"cpu"`."""
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_prepare(torch, device):
    """On CUDA: TF32 matmuls (XLA's default float32 on the GPU) and a fresh
    peak-memory count."""
    if torch.device(device).type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.cuda.reset_peak_memory_stats()


def torch_sync(torch, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def torch_device_report(torch, device):
    """The device fields of a PyTorch row (see the module docstring)."""
    on_gpu = torch.device(device).type == "cuda"
    return {
        "device": torch.device(device).type,
        "device_detail": (torch.cuda.get_device_name() if on_gpu
                          else f"CPU, {torch.get_num_threads()} threads"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "peak_device_bytes": int(torch.cuda.max_memory_allocated()) if on_gpu else None,
    }
