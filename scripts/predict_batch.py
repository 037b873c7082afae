"""Workflow step 'predict_batch': see sviflow.steps.predict_batch. Run by Snakemake, or by hand:
python scripts/predict_batch.py --input NAME=PATH ... --output NAME=PATH ... --params '{...}'"""

from sviflow.stepio import run_step
from sviflow.steps import predict_batch

run_step(predict_batch, globals().get("snakemake"))
