rule simulate:
    """The observed data of one dataset, from its generator or its file."""

    # numpy only, about a second: on a cluster it runs in the main Snakemake process, not as a
    # SLURM job that would wait for the scheduler (workflow/profiles/README.md)
    localrule: True
    input:
        lambda wildcards: data_file_inputs(wildcards.dataset),
        library=library("data.py"),
    output:
        data=out("data/{dataset}.h5"),
    params:
        name=lambda wildcards: wildcards.dataset,
        spec=lambda wildcards: dataset_spec(wildcards.dataset),
    wildcard_constraints:
        dataset=SOLO_DATASET,  # a dataset sweep's are its batch's (below)
    log:
        out("logs/simulate/{dataset}.log"),
    benchmark:
        out("benchmarks/simulate/{dataset}.tsv")
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        CONDA_ENV
    script:
        "../../scripts/simulate.py"


# The datasets of a dataset sweep (datasets.<name>.sweep) in one job: each file is the one the
# simulate rule would make of it alone. A change to one dataset of the sweep remakes them all
# (their fits, one batch, rerun anyway: their batch's params hold every fit's spec).
for _index, (_sweep, _datasets) in enumerate(PLAN.dataset_batches().items(), start=1):

    rule:
        """The datasets of a dataset sweep, one process."""
        name:
            f"simulate_sweep_{_index}"
        localrule: True
        input:
            [path for dataset in _datasets for path in data_file_inputs(dataset)],
            library=library("data.py"),
        output:
            data=[out(f"data/{dataset}.h5") for dataset in _datasets],
        params:
            names=_datasets,
            specs=[dataset_spec(dataset) for dataset in _datasets],
        log:
            out(f"logs/batches/simulate/{_sweep}.log"),
        benchmark:
            out(f"benchmarks/batches/simulate/{_sweep}.tsv")
        resources:
            mem_mb=1000,
            runtime=10,
        conda:
            CONDA_ENV
        script:
            "../../scripts/simulate_batch.py"
