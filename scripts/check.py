"""Workflow step 'check': see sviflow.steps.check. Run by Snakemake, or by hand:
python scripts/check.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import check

run_step(check, globals().get("snakemake"))
