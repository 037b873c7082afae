rule check:
    """Did the fit converge, and how far is its guide from the reference posterior?"""
    input:
        unpack(
            lambda wildcards: with_reference(
                wildcards.fit,
                fit=out(f"fits/{wildcards.fit}.h5"),
                predictive=out(f"predictive/{wildcards.fit}.h5"),
            )
        ),
        # numpy, h5py and ArviZ only: the JAX work (the log weights) is the predict step's
        library=library("assess.py", "diagnostics.py", "convergence.py", "truth.py"),
    output:
        check=out("checks/{fit}.h5"),
    params:
        spec=lambda wildcards: fit_spec(wildcards.fit),
        checks=check_settings(),
    wildcard_constraints:
        fit=SOLO_FIT,  # a batched fit's is its batch's (batch.smk)
    log:
        out("logs/check/{fit}.log"),
    benchmark:
        out("benchmarks/check/{fit}.tsv")
    group:
        "fit_chain"  # with its fit (fit.smk)
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        CONDA_ENV
    script:
        "../../scripts/check.py"
