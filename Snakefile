# sviflow: Stochastic Variational Inference with NumPyro, one job per step, HDF5 between steps.
# The rules live in workflow/rules/, the work in the sviflow library; see README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/check.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/summarize.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
