rule plot:
    """The loss with its plateau windows, the parameter trajectories, and the posterior."""
    input:
        unpack(plot_inputs),
        library=library("plots.py"),
    output:
        loss=report("results/figures/{fit}/loss.png", caption="../report/loss.rst",
                    category="{fit}", labels={"figure": "loss", "fit": "{fit}"}),
        trajectories=report("results/figures/{fit}/trajectories.png",
                            caption="../report/trajectories.rst", category="{fit}",
                            labels={"figure": "trajectories", "fit": "{fit}"}),
        posterior=report("results/figures/{fit}/posterior.png", caption="../report/posterior.rst",
                         category="{fit}", labels={"figure": "posterior", "fit": "{fit}"}),
    params:
        spec=lambda wildcards: {"name": wildcards.fit},
    log:
        "results/logs/plot/{fit}.log",
    benchmark:
        "results/benchmarks/plot/{fit}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/plot.py"


rule plot_mock_observations:
    """The post's two mock-observation histograms (fits of models with data)."""
    input:
        unpack(plot_inputs),
        library=library("plots.py"),
    output:
        mock_observations=report("results/figures/{fit}/mock_observations.png",
                                 caption="../report/mock_observations.rst", category="{fit}",
                                 labels={"figure": "mock observations", "fit": "{fit}"}),
    params:
        spec=lambda wildcards: {"name": wildcards.fit},
    log:
        "results/logs/plot/{fit}.mock_observations.log",
    benchmark:
        "results/benchmarks/plot/{fit}.mock_observations.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/plot.py"


rule plot_covariance:
    """The covariance recovered from auto_scale_tril (AutoMultivariateNormal fits)."""
    input:
        unpack(plot_inputs),
        library=library("plots.py"),
    output:
        covariance=report("results/figures/{fit}/covariance.png",
                          caption="../report/covariance.rst", category="{fit}",
                          labels={"figure": "covariance", "fit": "{fit}"}),
    params:
        spec=lambda wildcards: {"name": wildcards.fit},
    log:
        "results/logs/plot/{fit}.covariance.log",
    benchmark:
        "results/benchmarks/plot/{fit}.covariance.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/plot.py"


rule compare:
    """Loss curves of several fits in one figure (the post's 1 vs 32 particles)."""
    input:
        fits=lambda wildcards: [f"results/fits/{f}.h5" for f in config["comparisons"][wildcards.comparison]["fits"]],
        library=library("plots.py"),
    output:
        figure=report("results/figures/comparisons/{comparison}.png",
                      caption="../report/comparison.rst", category="comparisons",
                      labels={"comparison": "{comparison}"}),
    params:
        title=lambda wildcards: config["comparisons"][wildcards.comparison].get("title", ""),
    log:
        "results/logs/compare/{comparison}.log",
    benchmark:
        "results/benchmarks/compare/{comparison}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/compare.py"
