"""Workflow step 'model': see sviflow.steps.model. Run by Snakemake, or by hand:
python scripts/model.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step

# by name: sviflow.steps (numpy, h5py) is imported only where the step runs (sviflow.preload)
run_step("model", globals().get("snakemake"))
