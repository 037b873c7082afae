rule summarize:
    """Every fit as an ArviZ InferenceData (seeds are chains, netCDF via h5netcdf), and
    az.summary of every fit with its verdict: one CSV, one Markdown page. One job, so that
    ArviZ is imported once (1.5 s), not once per fit."""
    # light (it reads the files the fits wrote): on a cluster it runs in the main Snakemake
    # process, not as a SLURM job (workflow/profiles/README.md)
    localrule: True
    input:
        predictive=expand("results/predictive/{fit}.h5", fit=FITS),
        checks=expand("results/checks/{fit}.h5", fit=FITS),
        data=sorted({path for path in map(fit_data, FITS) if path}),
        library=library("summary.py"),
    output:
        netcdf=expand("results/arviz/{fit}.nc", fit=FITS),
        csv=report("results/summary.csv", caption="../report/summary.rst", category="summary"),
        markdown="results/summary.md",
    params:
        fits=FITS,
        data={fit: fit_data(fit) for fit in FITS},
        specs={fit: {"name": fit, "model": config["fits"][fit]["model"],
                     "guide": config["fits"][fit]["guide"]["name"]} for fit in FITS},
    log:
        "results/logs/summarize.log",
    benchmark:
        "results/benchmarks/summarize.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        CONDA_ENV
    script:
        "../../scripts/summarize.py"


rule strict:
    """With checks.strict: fail, after the summary is written, when a fit did not pass."""
    localrule: True  # reads the verdicts, a fraction of a second
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
        CONDA_ENV
    script:
        "../../scripts/strict.py"
