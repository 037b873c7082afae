# sviflow: Stochastic Variational Inference with NumPyro, one job per step, HDF5 between steps.
# The rules live in workflow/rules/, the work in the sviflow library; see README.md.
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# Snakemake's own message for a malformed config names neither the file nor the line
try:
    with open("config/config.yaml") as handle:
        yaml.safe_load(handle)
except FileNotFoundError:
    pass  # Snakemake's message names the file
except yaml.YAMLError as error:
    raise WorkflowError(f"config error: config/config.yaml is not valid YAML: {error}") from None


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/conda.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/check.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/batch.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/summarize.smk"


rule all:
    default_target: True
    input:
        all_outputs(),


onstart:
    start_preload()


onsuccess:
    stop_preload()
    cancel_rate_limiter_timers()


onerror:
    stop_preload()
    cancel_rate_limiter_timers()
