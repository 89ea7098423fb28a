"""The published APIs the kit keeps, each fenced in one module named for it.

- `gated_sae_tf`: the `gated-sae-tf` 0.1.1 API (`GatedSAE`, `sparsity_report`,
  `decoder_sharpness`, `WarmupCosineDecay`, `plot_decoder_gallery`,
  `plot_feature_gallery`), exported as `gsl.*` under the same names.
"""
