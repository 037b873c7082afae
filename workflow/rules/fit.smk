rule fit:
    """One SVI fit: all its seeds in one vmap, the steps as lax.scan in chunks."""
    input:
        unpack(lambda wildcards: fit_inputs(wildcards.fit)),
        # its model's file: every fit at the same depth of the DAG (workflow/rules/model.smk)
        model=lambda wildcards: f"results/models/{config['fits'][wildcards.fit]['model']}.json",
        library=library("engine.py", "convergence.py", "laplace.py", *MODEL_CODE),
    output:
        fit="results/fits/{fit}.h5",
    params:
        spec=lambda wildcards: fit_spec(wildcards.fit),
    log:
        "results/logs/fit/{fit}.log",
    benchmark:
        "results/benchmarks/fit/{fit}.tsv"
    threads: JAX_THREADS
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/fit.py"
