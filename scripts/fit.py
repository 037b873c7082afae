"""Workflow step 'fit': see sviflow.steps.fit. Run by Snakemake, or by hand:
python scripts/fit.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step

# by name: sviflow.steps (numpy, h5py) is imported only where the step runs (sviflow.preload)
run_step("fit", globals().get("snakemake"))
