# The reference posterior of each model and dataset (sviflow.steps.reference): its own file, so
# that Snakemake's error for a failing reference job points here.


rule reference:
    """The reference posterior of one model on one dataset, computed once for all its fits."""
    input:
        unpack(lambda wildcards: reference_inputs(wildcards.reference)),
        # its model's file: every reference at the same depth of the DAG (workflow/rules/model.smk)
        model=lambda wildcards: out(f"models/{reference_model(wildcards.reference)}.json"),
        # method draws: the file of draws, so that an edit of it reruns the reference
        draws=lambda wildcards: reference_file(reference_model(wildcards.reference)) or [],
        library=library("references.py", "compiling.py", *MODEL_CODE),
    output:
        reference=out("references/{reference}.h5"),
    params:
        model=lambda wildcards: model_spec(reference_model(wildcards.reference)),
        reference=lambda wildcards: reference_settings(reference_model(wildcards.reference)),
    wildcard_constraints:
        reference=SOLO_REFERENCE,  # a dataset sweep's exact or grid ones are its batch's (below)
    log:
        out("logs/reference/{reference}.log"),
    benchmark:
        out("benchmarks/reference/{reference}.tsv")
    threads: JAX_THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    script:
        "../../scripts/reference.py"


# A model's exact or grid references on the datasets of a dataset sweep in one job (a second
# or two each: one process, not one per dataset, and on a cluster one submission); each file
# is the one the reference rule would make of it alone. Every dataset of the sweep, whichever
# the fits need, so that the job does not change with the fits. nuts and draws references keep
# a job per dataset (Plan.reference_batches). Adding a dataset to the sweep remakes the batch's
# references, and the checks of the fits on them rerun (their fits do not, unless their own
# inputs changed).
for _index, (_batch, _ids) in enumerate(PLAN.reference_batches().items(), start=1):
    _model = reference_model(_ids[0])

    rule:
        """A model's references on the datasets of a dataset sweep, one process."""
        name:
            f"reference_sweep_{_index}"
        input:
            code=PLAN.code_files(model=_model),
            data=[reference_inputs(reference)["data"] for reference in _ids],
            model=out(f"models/{_model}.json"),
            library=library("references.py", "compiling.py", *MODEL_CODE),
        output:
            reference=[out(f"references/{reference}.h5") for reference in _ids],
        params:
            model=model_spec(_model),
            reference=reference_settings(_model),
        log:
            out(f"logs/batches/reference/{_batch}.log"),
        benchmark:
            out(f"benchmarks/batches/reference/{_batch}.tsv")
        threads: JAX_THREADS
        resources:
            # more with each retry, as the profile's set-resources give the reference rule
            # (set-resources names rules, and these are numbered)
            mem_mb=lambda wildcards, attempt: 4000 * attempt,
            runtime=lambda wildcards, attempt: 60 * attempt,
        conda:
            CONDA_ENV
        script:
            "../../scripts/reference_batch.py"
