rule check:
    """Did the fit converge, and how far is its guide from the reference posterior?"""
    input:
        unpack(lambda wildcards: with_reference(
            wildcards.fit,
            fit=f"results/fits/{wildcards.fit}.h5",
            predictive=f"results/predictive/{wildcards.fit}.h5",
            **fit_inputs(wildcards.fit),
        )),
        library=library("diagnostics.py", "truth.py", *MODEL_CODE),
    output:
        check="results/checks/{fit}.h5",
    params:
        spec=lambda wildcards: fit_spec(wildcards.fit),
        checks=check_settings(),
    log:
        "results/logs/check/{fit}.log",
    benchmark:
        "results/benchmarks/check/{fit}.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/check.py"
