"""`ARCHITECTURES`, `BUILDERS` and `build_sae`: every SAE variant of the kit by name.

One `Architecture` record per variant: its name, its builder, its encoder
class, and how interop writes it in the SAELens format. `BUILDERS`,
`build_sae`, interop (`gated_sae_layers.interop`) and the docs' tables read
these records; the encoder class declares the variables that carry the
latent axis itself (`latent_axes`, read by `latent_layout_map`). See
`docs/architecture.md` for adding a variant.
"""

import collections.abc
import dataclasses
import inspect
import types
import typing

from gated_sae_layers.layers.base import SparseEncoder
from gated_sae_layers.layers.batch_topk_encoder import BatchTopKEncoder
from gated_sae_layers.layers.gated_encoder import GatedEncoder
from gated_sae_layers.layers.jumprelu_encoder import JumpReLUEncoder
from gated_sae_layers.layers.relu_encoder import ReLUEncoder
from gated_sae_layers.layers.topk_encoder import TopKEncoder
from gated_sae_layers.models.builders.gated import build_gated_sae
from gated_sae_layers.models.builders.jumprelu import build_jumprelu_sae
from gated_sae_layers.models.builders.matryoshka import build_matryoshka_sae
from gated_sae_layers.models.builders.relu import build_relu_sae
from gated_sae_layers.models.builders.topk import build_batch_topk_sae, build_topk_sae


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The record of one SAE variant: everything the kit looks it up by.

    Attributes:
        name: the variant's name, as in `build_sae(name, ...)` and in
            `model.architecture["name"]` (its builder records it).
        builder: the `build_*` function, `builder(input_dim, latent_dim,
            **arguments)`; it ends with `assembly.record_architecture(model,
            name, ...)`.
        encoder: the encoder class the builder uses (a `SparseEncoder`
            subclass that declares its `latent_axes`).
        saelens: the SAELens `architecture` the variant exports as
            (`"standard"`, `"gated"`, `"jumprelu"`, `"topk"`), or None if
            it does not export.
        saelens_tensors: the name of the interop tensor codec that moves the
            encoder's variables to and from the SAELens tensors (interop
            looks it up by this name: `"gated"`, `"affine"`,
            `"learned_threshold"`, `"batch_threshold"`); None if it does
            not export.
        saelens_defaults: None, or the builder arguments a SAELens folder of
            `saelens` loads with when it holds no metadata of ours: the
            variant is then the default for that SAELens architecture (one
            per SAELens architecture).
    """

    name: str
    builder: typing.Callable
    encoder: type
    saelens: typing.Optional[str] = None
    saelens_tensors: typing.Optional[str] = None
    saelens_defaults: typing.Optional[typing.Mapping] = None

    def __post_init__(self):
        if self.saelens_defaults is not None:
            object.__setattr__(self, "saelens_defaults",
                               types.MappingProxyType(dict(self.saelens_defaults)))

    def build(self, input_dim, latent_dim, **arguments):
        """`builder(input_dim, latent_dim, **arguments)`."""
        return self.builder(input_dim, latent_dim, **arguments)


ARCHITECTURES = {record.name: record for record in (
    Architecture("gated", build_gated_sae, GatedEncoder, saelens="gated",
                 saelens_tensors="gated", saelens_defaults={"sparsity_coefficient": 0.0}),
    Architecture("relu", build_relu_sae, ReLUEncoder, saelens="standard",
                 saelens_tensors="affine",
                 # SAELens trains `standard` with the L1 weighted by decoder norm.
                 saelens_defaults={"sparsity_coefficient": 0.0,
                                   "weight_by_decoder_norm": True}),
    Architecture("topk", build_topk_sae, TopKEncoder, saelens="topk",
                 saelens_tensors="affine", saelens_defaults={}),
    # BatchTopK and Matryoshka export as JumpReLU with their constant
    # inference threshold.
    Architecture("batch_topk", build_batch_topk_sae, BatchTopKEncoder,
                 saelens="jumprelu", saelens_tensors="batch_threshold"),
    Architecture("jumprelu", build_jumprelu_sae, JumpReLUEncoder, saelens="jumprelu",
                 saelens_tensors="learned_threshold",
                 saelens_defaults={"sparsity_coefficient": 0.0}),
    Architecture("matryoshka", build_matryoshka_sae, BatchTopKEncoder,
                 saelens="jumprelu", saelens_tensors="batch_threshold"),
)}
"""Every variant's `Architecture` record, by name (the order of `build_sae`'s list)."""



class _Builders(collections.abc.Mapping):
    """`{name: builder}`, read from `ARCHITECTURES` when it is looked up."""

    def __getitem__(self, name):
        return ARCHITECTURES[name].builder

    def __iter__(self):
        return iter(ARCHITECTURES)

    def __len__(self):
        return len(ARCHITECTURES)

    def __repr__(self):
        return repr(dict(self))


BUILDERS = _Builders()
"""`{name: builder}` of every record of `ARCHITECTURES` (a live, read-only view)."""


def register_architecture(record):
    """Adds a variant's `Architecture` record, so `build_sae` (and interop) know it.

    The kit's own variants are listed in `ARCHITECTURES` in this module;
    call this for a variant defined in your own code (see
    `docs/architecture.md`). Raises if the name is taken, or if the encoder
    class is not a `SparseEncoder` that declares its `latent_axes`.

    Returns:
        `record`.
    """
    if not isinstance(record, Architecture):
        raise TypeError("`record` must be an `Architecture`. Received: "
                        f"record of type {type(record).__name__}")
    if not isinstance(record.name, str) or not record.name:
        raise TypeError(f"`Architecture.name` must be a non-empty string. "
                        f"Received: name={record.name!r}")
    if record.name in ARCHITECTURES:
        raise ValueError(f"An architecture named {record.name!r} is already "
                         f"registered: {ARCHITECTURES[record.name]}")
    if not callable(record.builder):
        raise TypeError(f"`Architecture.builder` must be callable. "
                        f"Received: builder={record.builder!r}")
    if not (isinstance(record.encoder, type) and issubclass(record.encoder, SparseEncoder)
            and record.encoder.latent_axes is not None):
        raise TypeError(
            "`Architecture.encoder` must be a `SparseEncoder` subclass that declares "
            f"`latent_axes` (the axes of the variables its `build` creates). Received: "
            f"encoder={record.encoder!r}")
    ARCHITECTURES[record.name] = record
    return record


def get_architecture(name):
    """The `Architecture` record named `name`; a `ValueError` listing them otherwise.

    Example:

    >>> get_architecture("topk").encoder.__name__
    'TopKEncoder'
    """
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(
            f"`architecture` must be one of {list(ARCHITECTURES)}. "
            f"Received: architecture={name!r}")
    return ARCHITECTURES[name]


def build_sae(architecture, input_dim, latent_dim, **kwargs):
    """Builds any SAE variant of the kit by name.

    Args:
        architecture: one of `"gated"`, `"relu"`, `"jumprelu"` (these take
            `sparsity_coefficient=`), `"topk"`, `"batch_topk"` (these take
            `k=`), `"matryoshka"` (takes `k=` and `prefix_sizes=`).
        input_dim: int, the width of the activations.
        latent_dim: int, the number of latents.
        **kwargs: the other arguments of the builder:
            `build_gated_sae(input_dim, latent_dim, sparsity_coefficient,
            aux_coefficient=1.0, remove_parallel_gradient=False,
            encoder_init_scale=0.1, aux_trains_decoder=False,
            weight_by_decoder_norm=False, decoder_learning_rate_multiplier=1.0)`,
            `build_relu_sae(..., sparsity_coefficient, weight_by_decoder_norm=False)`,
            `build_jumprelu_sae(..., sparsity_coefficient, initial_threshold=1e-3,
            bandwidth=1e-3)`, `build_topk_sae(..., k, k_aux=512,
            dead_steps_threshold=1000, aux_coefficient=1/32)`,
            `build_batch_topk_sae(...` the same `, threshold_momentum=0.99)`,
            `build_matryoshka_sae(..., k, prefix_sizes=None, k_aux=512,
            dead_steps_threshold=1000, aux_coefficient=1/32)`; each takes
            `name` and `dtype` (a dtype policy such as `"mixed_bfloat16"`).

    Returns:
        A `SparseAutoencoder` whose outputs include `reconstruction` and
        `latents` and whose logs include `loss`, `reconstruction`, the
        variant's other terms, `l0`, `fvu` and `dead_features`.

    Example:

    >>> model = build_sae("topk", input_dim=8, latent_dim=32, k=4)
    >>> type(model.encoder).__name__
    'TopKEncoder'
    >>> build_sae("vanilla", 8, 32)
    Traceback (most recent call last):
    ...
    ValueError: `architecture` must be one of ['gated', 'relu', 'topk', 'batch_topk', 'jumprelu', 'matryoshka']. Received: architecture='vanilla'
    """
    builder = get_architecture(architecture).builder
    parameters = inspect.signature(builder).parameters
    accepted = [p for p in parameters if p not in ("input_dim", "latent_dim")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"build_sae({architecture!r}, ...) does not take {unknown}; it takes "
            f"{accepted}. Received: {', '.join(f'{k}={kwargs[k]!r}' for k in unknown)}")
    missing = [p for p in accepted if parameters[p].default is inspect.Parameter.empty
               and p not in kwargs]
    if missing:
        raise TypeError(
            f"build_sae({architecture!r}, ...) needs {missing}. Received: "
            f"kwargs={kwargs!r}")
    return builder(input_dim, latent_dim, **kwargs)
