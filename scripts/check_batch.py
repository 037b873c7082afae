"""Workflow step 'check_batch': see sviflow.steps.check_batch. Run by Snakemake, or by hand:
python scripts/check_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step

# by name: sviflow.steps (numpy, h5py) is imported only where the step runs (sviflow.preload)
run_step("check_batch", globals().get("snakemake"))
