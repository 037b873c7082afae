"""Workflow step 'fit_batch': see sviflow.steps.fit_batch. Run by Snakemake, or by hand:
python scripts/fit_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import fit_batch

run_step(fit_batch, globals().get("snakemake"))
