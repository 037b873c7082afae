"""Workflow step 'plot': see sviflow.steps.plot. Run by Snakemake, or by hand:
python scripts/plot.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step

# by name: sviflow.steps (numpy, h5py) is imported only where the step runs (sviflow.preload)
run_step("plot", globals().get("snakemake"))
