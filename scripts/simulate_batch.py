"""Workflow step 'simulate_batch': see sviflow.steps.simulate_batch. Run by Snakemake, or by hand:
python scripts/simulate_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import simulate_batch

run_step(simulate_batch, globals().get("snakemake"))
