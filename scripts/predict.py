"""Workflow step 'predict': see sviflow.steps.predict. Run by Snakemake, or by hand:
python scripts/predict.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import predict

run_step(predict, globals().get("snakemake"))
