rule to_arviz:
    """One ArviZ InferenceData per fit (seeds are chains), netCDF via h5netcdf."""
    input:
        unpack(lambda wildcards: {
            "predictive": f"results/predictive/{wildcards.fit}.h5",
            "check": f"results/checks/{wildcards.fit}.h5",
            **({"data": fit_inputs(wildcards.fit)["data"]} if "data" in fit_inputs(wildcards.fit) else {}),
        }),
        library=library("summary.py"),
    output:
        netcdf="results/arviz/{fit}.nc",
    params:
        spec=lambda wildcards: fit_spec(wildcards.fit),
    log:
        "results/logs/to_arviz/{fit}.log",
    benchmark:
        "results/benchmarks/to_arviz/{fit}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/to_arviz.py"


rule summarize:
    """az.summary of every fit with its verdict: one CSV, one Markdown page."""
    input:
        netcdf=expand("results/arviz/{fit}.nc", fit=FITS),
        checks=expand("results/checks/{fit}.h5", fit=FITS),
        library=library("summary.py"),
    output:
        csv=report("results/summary.csv", caption="../report/summary.rst", category="summary"),
        markdown="results/summary.md",
    params:
        fits=FITS,
    log:
        "results/logs/summarize.log",
    benchmark:
        "results/benchmarks/summarize.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../../scripts/summarize.py"


rule strict:
    """With checks.strict: fail, after the summary is written, when a fit did not pass."""
    input:
        checks=expand("results/checks/{fit}.h5", fit=FITS),
        summary="results/summary.md",
    output:
        ok="results/checks/strict.ok",
    params:
        fits=FITS,
    log:
        "results/logs/strict.log",
    conda:
        "../../environment.yml"
    script:
        "../../scripts/strict.py"
