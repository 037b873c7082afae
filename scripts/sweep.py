"""Workflow step 'sweep': see sviflow.steps.sweep. Run by Snakemake, or by hand:
python scripts/sweep.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import sweep

run_step(sweep, globals().get("snakemake"))
