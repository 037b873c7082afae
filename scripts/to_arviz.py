"""Workflow step 'to_arviz': see sviflow.steps.to_arviz. Run by Snakemake, or by hand:
python scripts/to_arviz.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""
from sviflow.stepio import run_step
from sviflow.steps import to_arviz

run_step(to_arviz, globals().get("snakemake"))
