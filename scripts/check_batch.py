"""Workflow step 'check_batch': see sviflow.steps.check_batch. Run by Snakemake, or by hand:
python scripts/check_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import check_batch

run_step(check_batch, globals().get("snakemake"))
