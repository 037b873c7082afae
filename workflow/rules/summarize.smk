rule summarize:
    """Every fit as an ArviZ InferenceData (seeds are chains, netCDF via h5netcdf), and
    az.summary of every fit with its verdict: one CSV, one Markdown page. One job, so that
    ArviZ is imported once (1.5 s), not once per fit."""

    # light (it reads the files the fits wrote): on a cluster it runs in the main Snakemake
    # process, not as a SLURM job (workflow/profiles/README.md)
    localrule: True
    input:
        predictive=expand(out("predictive/{fit}.h5"), fit=FITS),
        checks=expand(out("checks/{fit}.h5"), fit=FITS),
        data=sorted({path for path in map(fit_data, FITS) if path}),
        library=library("summary.py", "verdicts.py"),
    output:
        netcdf=expand(out("arviz/{fit}.nc"), fit=FITS),
        csv=report(out("summary.csv"), caption="../report/summary.rst", category="summary"),
        markdown=out("summary.md"),
        # embedded in the landing page (workflow/report/workflow.rst), and listed under summary
        verdicts=report(out("verdicts.html"), caption="../report/verdicts.rst", category="summary"),
    params:
        fits=FITS,
        data={fit: fit_data(fit) for fit in FITS},
        specs=PLAN.summary_specs(),
        sweeps=PLAN.sweep_settings(),
        # the fits whose figures are report items (batched fits' are files only: batch.smk)
        linked=[fit for fit in FITS if fit in PLAN.solo_fits and PLAN.draws_figures(fit)],
    log:
        out("logs/summarize.log"),
    benchmark:
        out("benchmarks/summarize.tsv")
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
        checks=expand(out("checks/{fit}.h5"), fit=FITS),
        summary=out("summary.md"),
    output:
        ok=out("checks/strict.ok"),
    params:
        fits=FITS,
    log:
        out("logs/strict.log"),
    conda:
        CONDA_ENV
    script:
        "../../scripts/strict.py"
