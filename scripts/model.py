"""Workflow step 'model': see sviflow.steps.model. Run by Snakemake, or by hand:
python scripts/model.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import model

run_step(model, globals().get("snakemake"))
