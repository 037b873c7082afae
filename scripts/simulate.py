"""Workflow step 'simulate': see sviflow.steps.simulate. Run by Snakemake, or by hand:
python scripts/simulate.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import simulate

run_step(simulate, globals().get("snakemake"))
