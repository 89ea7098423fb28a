"""Training an SAE on more than one device, on the engines Keras already has.

Two engines, two routes, one module each:

- **JAX** (`keras.distribution`), `distribution.layout`: `DataParallel`
  copies the model to every device and splits each batch; `latent_parallel`
  (a `ModelParallel` built on `latent_layout_map`) also splits the *latent*
  dimension of the SAE over devices, so a dictionary too large for one
  device trains on many. Set the distribution with
  `keras.distribution.set_distribution` **before** building the model: a
  variable is laid out when it is created. Which encoder variables carry the
  latent axis is declared by each encoder class (`SparseEncoder.latent_axes`).
- **TensorFlow** (`tf.distribute.MirroredStrategy`), `distribution.replicas`:
  build and compile the model inside `strategy.scope()`; `SparseAutoencoder`
  divides its extra losses by the number of replicas and logs every loss
  term and metric over the global batch. `replicas` holds the kit's only
  uses of `tf.distribute`.

See `docs/distributed.md` for worked examples, multi-host included.
"""

from gated_sae_layers.distribution.layout import (
    BATCH_AXIS,
    LATENT,
    LATENT_AXIS,
    LatentLayoutMap,
    check_encoder_variable,
    encoder_variable_axes,
    latent_layout_map,
    latent_parallel,
    register_encoder,
)
from gated_sae_layers.distribution.replicas import (
    check_jit_compile,
    num_replicas_in_sync,
    read_across_replicas,
    sum_over_replicas,
)

__all__ = [
    "BATCH_AXIS", "LATENT", "LATENT_AXIS", "LatentLayoutMap", "check_encoder_variable",
    "check_jit_compile", "encoder_variable_axes", "latent_layout_map", "latent_parallel",
    "num_replicas_in_sync", "read_across_replicas", "register_encoder",
    "sum_over_replicas",
]
