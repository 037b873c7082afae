rule fit:
    """One SVI fit: all its seeds in one vmap, the steps as lax.scan in chunks."""
    input:
        unpack(lambda wildcards: fit_inputs(wildcards.fit)),
        # its model's file: every fit at the same depth of the DAG (workflow/rules/model.smk)
        model=lambda wildcards: out(f"models/{config['fits'][wildcards.fit]['model']}.json"),
        library=library("engine.py", "compiling.py", "convergence.py", "laplace.py", *MODEL_CODE),
    output:
        fit=out("fits/{fit}.h5"),
    params:
        spec=lambda wildcards: fit_spec(wildcards.fit),
    wildcard_constraints:
        fit=SOLO_FIT,  # a batched fit's is its batch's (batch.smk)
    log:
        out("logs/fit/{fit}.log"),
    benchmark:
        out("benchmarks/fit/{fit}.tsv")
    # on a cluster: one sbatch job runs this fit and its predict, check and plot jobs, one after
    # the other (workflow/profiles/README.md, "Group jobs"); local runs ignore groups
    group:
        "fit_chain"
    # the longest fits start first (sviflow.config.Plan.priority)
    priority: lambda wildcards: PLAN.priority(wildcards.fit)
    threads: JAX_THREADS
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        CONDA_ENV
    script:
        "../../scripts/fit.py"
