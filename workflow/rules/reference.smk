# The reference posterior of each model and dataset (sviflow.steps.reference): its own file, so
# that Snakemake's error for a failing reference job points here.


rule reference:
    """The reference posterior of one model on one dataset, computed once for all its fits."""
    input:
        unpack(lambda wildcards: reference_inputs(wildcards.reference)),
        # its model's file: every reference at the same depth of the DAG (workflow/rules/model.smk)
        model=lambda wildcards: out(f"models/{reference_model(wildcards.reference)}.json"),
        # method draws: the file of draws, so that an edit of it reruns the reference
        draws=lambda wildcards: reference_file(reference_model(wildcards.reference)) or [],
        library=library("references.py", *MODEL_CODE),
    output:
        reference=out("references/{reference}.h5"),
    params:
        model=lambda wildcards: model_spec(reference_model(wildcards.reference)),
        reference=lambda wildcards: reference_settings(reference_model(wildcards.reference)),
    log:
        out("logs/reference/{reference}.log"),
    benchmark:
        out("benchmarks/reference/{reference}.tsv")
    threads: JAX_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    script:
        "../../scripts/reference.py"
