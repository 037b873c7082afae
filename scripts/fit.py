"""Workflow step 'fit': see sviflow.steps.fit. Run by Snakemake, or by hand:
python scripts/fit.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import fit

run_step(fit, globals().get("snakemake"))
