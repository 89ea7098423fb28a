"""Models assembled from the kit's layers."""
