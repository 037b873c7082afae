rule sweep:
    """A sweep's fits side by side (fits.<name>.sweep): final ELBO, KL or distances, verdicts."""

    # one figure from the members' check files: on a cluster it runs in the main Snakemake
    # process (workflow/profiles/README.md)
    localrule: True
    input:
        checks=lambda wildcards: [out(f"checks/{fit}.h5") for fit in PLAN.sweeps[wildcards.sweep]["members"]],
        library=library("plots.py"),
    output:
        figure=report(
            out("figures/sweeps/{sweep}.png"),
            caption="../report/sweep.rst",
            category="sweeps",
            labels={"sweep": "{sweep}"},
        ),
    params:
        name=lambda wildcards: wildcards.sweep,
        sweep=lambda wildcards: PLAN.sweeps[wildcards.sweep],
    log:
        out("logs/sweep/{sweep}.log"),
    benchmark:
        out("benchmarks/sweep/{sweep}.tsv")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        CONDA_ENV
    script:
        "../../scripts/sweep.py"
