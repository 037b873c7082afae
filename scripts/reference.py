"""Workflow step 'reference': see sviflow.steps.reference. Run by Snakemake, or by hand:
python scripts/reference.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import reference

run_step(reference, globals().get("snakemake"))
