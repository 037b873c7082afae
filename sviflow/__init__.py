"""sviflow: Stochastic Variational Inference with NumPyro, fit by fit, with the truth about each.

``sviflow.config`` plans a config for the workflow (and calls Snakemake's validator); the rest of
the library knows nothing of Snakemake: ``sviflow.steps`` holds one function per workflow step,
and the workflow's scripts only hand them their paths and settings.
"""

__version__ = "0.1.0"  # the one place; pyproject.toml reads it (CHANGELOG.md)
