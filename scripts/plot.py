"""Workflow step 'plot': see sviflow.steps.plot. Run by Snakemake, or by hand:
python scripts/plot.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import plot

run_step(plot, globals().get("snakemake"))
