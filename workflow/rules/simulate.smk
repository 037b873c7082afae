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
