"""Workflow step 'strict': see sviflow.steps.strict."""

from sviflow.stepio import run_step

# by name: sviflow.steps (numpy, h5py) is imported only where the step runs (sviflow.preload)
run_step("strict", globals().get("snakemake"))
