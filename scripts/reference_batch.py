"""Workflow step 'reference_batch': see sviflow.steps.reference_batch. Run by Snakemake, or by hand:
python scripts/reference_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step

# by name: sviflow.steps (numpy, h5py) is imported only where the step runs (sviflow.preload)
run_step("reference_batch", globals().get("snakemake"))
