# One job draws all the figures of a fit: matplotlib is imported once, not once per figure.
# Which figures a fit has depends on it (mock observations: a model with data; the covariance:
# AutoMultivariateNormal), and a rule's outputs are fixed: so one rule per set of figures,
# each constrained to the fits that have that set (only the sets some fit has are defined:
# sviflow.config.Plan.plot_sets, which tests read too).
for _extra, _fits in PLAN.plot_sets().items():
    _names = PLOT_FIGURES + tuple(OPTIONAL_FIGURES[key] for key in _extra)

    rule:
        """A fit's figures: loss with plateau windows, parameter trajectories, the posterior; mock
        observations and the recovered covariance where they apply."""
        name:
            PLAN.plot_rule_name(_extra)
        input:
            unpack(plot_inputs),
            library=library("plots.py", "verdicts.py"),
        output:
            **{name: figure_output(name) for name in _names},
            # the verdict and its reasons in full, which the captions embed (the titles are short)
            verdict=out("figures/{fit}/verdict.html"),
        params:
            spec=lambda wildcards: {"name": wildcards.fit},
        wildcard_constraints:
            fit="|".join(map(re.escape, _fits)),
        log:
            out("logs/plot/{fit}.log"),
        benchmark:
            out("benchmarks/plot/{fit}.tsv")
        group:
            "fit_chain"  # with its fit (fit.smk)
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            CONDA_ENV
        script:
            "../../scripts/plot.py"


rule compare:
    """Loss curves of several fits in one figure (the post's 1 vs 32 particles)."""

    # one figure from the fits' loss traces, about a second: on a cluster it runs in the main
    # Snakemake process (workflow/profiles/README.md)
    localrule: True
    input:
        fits=lambda wildcards: [
            out(f"fits/{f}.h5") for f in config["comparisons"][wildcards.comparison]["fits"]
        ],
        library=library("plots.py"),
    output:
        figure=report(
            out("figures/comparisons/{comparison}.png"),
            caption="../report/comparison.rst",
            category="comparisons",
            labels={"comparison": "{comparison}"},
        ),
    params:
        title=lambda wildcards: config["comparisons"][wildcards.comparison].get("title", ""),
    log:
        out("logs/compare/{comparison}.log"),
    benchmark:
        out("benchmarks/compare/{comparison}.tsv")
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        CONDA_ENV
    script:
        "../../scripts/compare.py"
