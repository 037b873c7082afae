"""Workflow step 'reference_batch': see sviflow.steps.reference_batch. Run by Snakemake, or by hand:
python scripts/reference_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import reference_batch

run_step(reference_batch, globals().get("snakemake"))
