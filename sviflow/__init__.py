"""sviflow: Stochastic Variational Inference with NumPyro, fit by fit, with the truth about each.

The library knows nothing of Snakemake: ``sviflow.steps`` holds one function per workflow step,
and the workflow's scripts only hand them their paths and settings.
"""

__version__ = "0.1.0"
