# The reference posterior of each model and dataset (sviflow.steps.reference): its own file, so
# that Snakemake's error for a failing reference job points here.


rule reference:
    """The reference posterior of one model on one dataset, computed once for all its fits."""
    input:
        unpack(lambda wildcards: reference_inputs(wildcards.reference)),
        # method draws: the file of draws, so that an edit of it reruns the reference
        draws=lambda wildcards: reference_file(wildcards.reference.split("--", 1)[0]) or [],
        library=library("references.py", *MODEL_CODE),
    output:
        reference="results/references/{reference}.h5",
    params:
        model=lambda wildcards: model_spec(wildcards.reference.split("--", 1)[0]),
        reference=lambda wildcards: reference_settings(wildcards.reference.split("--", 1)[0]),
    log:
        "results/logs/reference/{reference}.log",
    benchmark:
        "results/benchmarks/reference/{reference}.tsv"
    threads: JAX_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    script:
        "../../scripts/reference.py"
