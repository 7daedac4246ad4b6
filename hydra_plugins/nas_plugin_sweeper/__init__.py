"""Hydra discovers ``hydra/sweeper=nas`` here; the work lives in :mod:`nas_plugin`."""
