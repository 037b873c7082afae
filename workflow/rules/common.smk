"""The workflow's config, validated and planned by sviflow.config (tested without Snakemake);
here: the jobs' environment, the input functions and the wildcard constraints."""

import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from sviflow.config import OPTIONAL_FIGURES, PLOT_FIGURES, Plan, config_dir
from sviflow.config import validate as validate_config
from sviflow.errors import ConfigError

# Snakemake 9.27 does not pass --replace-workflow-config on to the jobs it spawns (SLURM jobs):
# they would merge config/config.yaml back in. The main process tells them through the
# environment (sbatch --export=ALL passes it on) and they replace the config as it did.
if workflow.config_settings.replace_workflow_config:
    os.environ.update(SVIFLOW_REPLACE_WORKFLOW_CONFIG="1")  # set for the jobs, not read from the user
elif os.environ.get("SVIFLOW_REPLACE_WORKFLOW_CONFIG") == "1" and workflow.config_settings.overwrite_config:
    import copy

    config.clear()
    config.update(copy.deepcopy(workflow.config_settings.overwrite_config))


def _config_errors(function, *args, **kwargs):
    """A library call whose ConfigError is Snakemake's one-line config error."""
    try:
        return function(*args, **kwargs)
    except ConfigError as error:
        raise WorkflowError(f"config error: {error}") from None


_config_errors(validate_config, config, workflow.source_path("../schemas/config.schema.yaml"))
# paths in the config are relative to the config file that the user gave
PLAN = _config_errors(
    Plan, config, config_dir(list(workflow.overwrite_configfiles or []) or list(workflow.configfiles))
)
FITS, DATASETS, MODELS, COMPARISONS = PLAN.fits, PLAN.datasets, PLAN.models, PLAN.comparisons
ENGINE = config["engine"]
# Passed to the jobs through the environment, not params: moving the cache reruns nothing.
CACHE_DIR = ENGINE["cache_dir"]
if CACHE_DIR:
    # set for the jobs, not read from the user: no envvars directive is needed
    os.environ.update(SVIFLOW_JAX_CACHE=os.path.abspath(CACHE_DIR))
else:  # disabled: a value inherited from the shell would turn it on again in the jobs
    os.environ.pop("SVIFLOW_JAX_CACHE", None)
# fits of a fixed number of steps take their chunks from here (they change none of their
# numbers: a change reruns nothing); a budget fit has them in its spec (sviflow.config)
os.environ.update(SVIFLOW_FIT_CHUNKS=str(ENGINE["chunks"]))
# numpyro's Trace_ELBO sums the sites in `set` order, which follows Python's per-process string
# hashing: without a fixed hash seed each job traces a differently ordered program, misses the
# persistent compilation cache, and differs from the last run in the last bits of the loss.
if os.environ.setdefault("PYTHONHASHSEED", "0") == "random":  # a fixed value of the user's is kept
    os.environ.update(PYTHONHASHSEED="0")


def library(*modules):
    """The sviflow modules that do a stage's work, as inputs: editing one reruns that stage
    (Snakemake tracks the scripts' code, not what they import)."""
    return [os.path.relpath(Path(workflow.basedir) / "sviflow" / module) for module in modules]


MODEL_CODE = ("models.py", "guides.py", "names.py", "userfiles.py", "resolve.py", "optim.py")

# A JAX job (fit, predict, reference) runs XLA's thread pools, for compiling and for the
# compiled steps; two such jobs on one core spin against each other. Claiming two of
# Snakemake's cores each keeps `--cores 4` on a 2-core machine at two JAX jobs at a time
# (cold default run measured: 40.4 s -> 34.2 s wall, 76 -> 63 CPU-s). Per rule on the command
# line: --set-threads fit=1 predict=1 reference=1.
JAX_THREADS = 2


model_spec = PLAN.model_spec
fit_spec = PLAN.fit_spec
code_files = PLAN.code_files
reference_file = PLAN.reference_file
reference_settings = PLAN.reference_settings
reference_inputs = PLAN.reference_inputs
fit_inputs = PLAN.fit_inputs
with_reference = PLAN.with_reference
fit_data = PLAN.fit_data
figures = PLAN.figures
data_file_inputs = PLAN.data_file_inputs
dataset_spec = PLAN.dataset_spec
check_settings = PLAN.check_settings
weighted_draws = PLAN.weighted_draws
all_outputs = PLAN.all_outputs
out = PLAN.out  # a path under the config's results folder (key results)


def reference_model(reference):
    """The model of a reference id."""
    return PLAN.split_reference(reference)[0]


def figure_output(name):
    """A figure of a fit as a report item; its caption is workflow/report/<name>.rst."""
    return report(
        out(f"figures/{{fit}}/{name}.png"),
        caption=f"../report/{name}.rst",
        category="{fit}",
        labels={"figure": name.replace("_", " "), "fit": "{fit}"},
    )


def plot_inputs(wildcards):
    return PLAN.plot_inputs(wildcards.fit)


WILDCARDS = PLAN.wildcard_constraints()
# the fits of the per-fit rules (fit.smk, predict.smk, check.smk, plot.smk); batch.smk has the
# others' (sviflow.config.Plan.batches)
SOLO_FIT = WILDCARDS.pop("solo_fit")
# the references of the per-dataset reference rule (reference.smk); a dataset sweep's exact or
# grid ones are made by the batch rules there (Plan.reference_batches)
SOLO_REFERENCE = WILDCARDS.pop("solo_reference")


wildcard_constraints:
    **WILDCARDS,


def cancel_rate_limiter_timers():
    """Snakemake 9's job rate limiter (--max-jobs-per-timespan, 100/1s by default) arms a
    threading.Timer, not a daemon thread, each time it waits for a job, and Python waits for
    the last one at exit: up to 1 s after every run that ran jobs. At the end of a run nothing
    is left to schedule, so the timers are cancelled (measured: 1.4 s -> 0.4 s from the last
    job's end to the exit of `snakemake`)."""
    import threading

    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


PRELOADED = []  # the run's server (sviflow.preload), while it runs


def start_preload():
    """The onstart handler's: a local run's jobs are forked from one preloaded process
    (sviflow.preload; SVIFLOW_PRELOAD=0 turns it off). Not on a cluster (each job is a SLURM
    job), nor with another interpreter for the jobs (--use-conda, containers)."""
    from snakemake.settings.types import DeploymentMethod

    from sviflow import preload

    methods = workflow.deployment_settings.deployment_method
    if (
        not workflow.local_exec
        or workflow.touch  # --touch runs no script
        or DeploymentMethod.CONDA in methods
        or DeploymentMethod.APPTAINER in methods
    ):
        return
    server = preload.start(
        os.path.join(".snakemake", "sviflow-preload.log"), preload.heavy_jobs(workflow.dag.needrun_jobs())
    )
    if server is not None:
        PRELOADED.append(server)


def stop_preload():
    while PRELOADED:
        PRELOADED.pop().stop()
