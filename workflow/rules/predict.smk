rule predict:
    """The post's three predictive paths: guide samples, mock data from model + guide and from
    model + samples; and the log weights of the guide's draws, for the check's ELBO and k-hat."""
    input:
        unpack(lambda wildcards: fit_inputs(wildcards.fit)),
        fit=out("fits/{fit}.h5"),
        library=library("predictive.py", "compiling.py", *MODEL_CODE),
    output:
        predictive=out("predictive/{fit}.h5"),
    params:
        spec=lambda wildcards: fit_spec(wildcards.fit),
        predictive=PLAN.predictive_settings(),
        weighted=weighted_draws(),
    wildcard_constraints:
        fit=SOLO_FIT,  # a batched fit's is its batch's (batch.smk)
    log:
        out("logs/predict/{fit}.log"),
    benchmark:
        out("benchmarks/predict/{fit}.tsv")
    group:
        "fit_chain"  # with its fit (fit.smk)
    threads: JAX_THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        CONDA_ENV
    script:
        "../../scripts/predict.py"
