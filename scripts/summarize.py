"""Workflow step 'summarize': see sviflow.steps.summarize. Run by Snakemake, or by hand:
python scripts/summarize.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import summarize

run_step(summarize, globals().get("snakemake"))
