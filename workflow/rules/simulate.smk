rule simulate:
    """The observed data of one dataset, from its generator or its file."""
    input:
        lambda wildcards: data_file_inputs(wildcards.dataset),
        library=library("data.py"),
    output:
        data="results/data/{dataset}.h5",
    params:
        name=lambda wildcards: wildcards.dataset,
        spec=lambda wildcards: dataset_spec(wildcards.dataset),
    log:
        "results/logs/simulate/{dataset}.log",
    benchmark:
        "results/benchmarks/simulate/{dataset}.tsv"
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/simulate.py"


rule reference:
    """The reference posterior of one model on one dataset, computed once for all its fits."""
    input:
        unpack(lambda wildcards: reference_inputs(wildcards.reference)),
        library=library("references.py", *MODEL_CODE),
    output:
        reference="results/references/{reference}.h5",
    params:
        model=lambda wildcards: model_spec(wildcards.reference.split("--", 1)[0]),
        reference=lambda wildcards: _sorted(config["models"][wildcards.reference.split("--", 1)[0]]["reference"]),
    log:
        "results/logs/reference/{reference}.log",
    benchmark:
        "results/benchmarks/reference/{reference}.tsv"
    threads: JAX_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/reference.py"
