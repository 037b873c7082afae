"""Workflow step 'compare': see sviflow.steps.compare. Run by Snakemake, or by hand:
python scripts/compare.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import compare

run_step(compare, globals().get("snakemake"))
