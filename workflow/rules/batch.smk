# Fits that share a program run as one (sviflow.config.Plan.batches, config/README.md "Sweeps
# and batches"): per batch one fit job (one vmapped program, compiled once), one predict, one
# check and one plot job, each writing every fit's file of its step, so that 40 fits do not pay
# 160 process starts. The files are the per-fit rules' (fit.smk, predict.smk, ...), the same
# names and contents; those rules take the fits that are not batched. A batch's params hold
# every fit's spec: a change to one fit reruns its batch, and the others' numbers stay the same
# to the bit (a fit's numbers do not depend on the other fits of its batch: sviflow.engine). The
# fits of a batch may fit different datasets: each job takes every fit's data (and reference) as
# a list in the fits' order, and runs one program per shape of data (sviflow.steps.fit_batch).
for _batch, _fits in PLAN.batches().items():
    _first = _fits[0]

    rule:
        """The fits of a batch: one vmapped program, engine.batch.lanes lanes at a time."""
        name:
            f"fit_{_batch}"
        input:
            **PLAN.batch_inputs(_fits),
            model=out(f"models/{config['fits'][_first]['model']}.json"),
            library=library("engine.py", "compiling.py", "convergence.py", "laplace.py", *MODEL_CODE),
        output:
            fit=[out(f"fits/{fit}.h5") for fit in _fits],
        params:
            specs=[fit_spec(fit) for fit in _fits],
            batch=PLAN.batch_settings(),
        log:
            out(f"logs/batches/fit/{_batch}.log"),
        benchmark:
            out(f"benchmarks/batches/fit/{_batch}.tsv")
        group:
            "fit_chain"  # with its predict, check and plot jobs (fit.smk)
        priority: PLAN.priority(*_fits)
        threads: JAX_THREADS
        resources:
            mem_mb=2000,
            runtime=60,
        conda:
            CONDA_ENV
        script:
            "../../scripts/fit_batch.py"

    rule:
        """The predictive paths of every fit of a batch, in one process."""
        name:
            f"predict_{_batch}"
        input:
            **PLAN.batch_inputs(_fits, fit=[out(f"fits/{fit}.h5") for fit in _fits]),
            library=library("predictive.py", "compiling.py", *MODEL_CODE),
        output:
            predictive=[out(f"predictive/{fit}.h5") for fit in _fits],
        params:
            specs=[fit_spec(fit) for fit in _fits],
            predictive=PLAN.predictive_settings(),
            weighted=weighted_draws(),
            batch=PLAN.batch_settings(),
        log:
            out(f"logs/batches/predict/{_batch}.log"),
        benchmark:
            out(f"benchmarks/batches/predict/{_batch}.tsv")
        group:
            "fit_chain"
        threads: JAX_THREADS
        resources:
            mem_mb=4000,
            runtime=30,
        conda:
            CONDA_ENV
        script:
            "../../scripts/predict_batch.py"

    rule:
        """The checks of every fit of a batch, in one process."""
        name:
            f"check_{_batch}"
        input:
            **PLAN.batch_inputs(
                _fits,
                code=False,
                data=False,
                reference=True,
                fit=[out(f"fits/{fit}.h5") for fit in _fits],
                predictive=[out(f"predictive/{fit}.h5") for fit in _fits],
            ),
            library=library("assess.py", "diagnostics.py", "convergence.py", "truth.py"),
        output:
            check=[out(f"checks/{fit}.h5") for fit in _fits],
        params:
            specs=[fit_spec(fit) for fit in _fits],
            checks=check_settings(),
        log:
            out(f"logs/batches/check/{_batch}.log"),
        benchmark:
            out(f"benchmarks/batches/check/{_batch}.tsv")
        group:
            "fit_chain"
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            CONDA_ENV
        script:
            "../../scripts/check_batch.py"

    rule:
        """The figures of every fit of a batch, in one process (files, not report items: the
        report shows the sweep figure and the summary of a batch's fits)."""
        name:
            f"plot_{_batch}"
        input:
            **PLAN.plot_inputs(_first, _fits),
            library=library("plots.py", "verdicts.py"),
        output:
            **{name: [out(f"figures/{fit}/{name}.png") for fit in _fits] for name in figures(_first)},
            verdict=[out(f"figures/{fit}/verdict.html") for fit in _fits],
        params:
            specs=[{"name": fit} for fit in _fits],
        log:
            out(f"logs/batches/plot/{_batch}.log"),
        benchmark:
            out(f"benchmarks/batches/plot/{_batch}.tsv")
        group:
            "fit_chain"
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            CONDA_ENV
        script:
            "../../scripts/plot_batch.py"
