"""Workflow step 'strict': see sviflow.steps.strict."""

from sviflow.stepio import run_step
from sviflow.steps import strict

run_step(strict, globals().get("snakemake"))
