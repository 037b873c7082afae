# Every fit and every reference of a model starts from its model's file, results/models/<model>.json
# (the model's config slice: function, arguments, precision). The file is there for the shape of
# the DAG: Snakemake's report draws the workflow graph with one node per rule per depth of the
# DAG (snakemake/report/rulegraph_spec.py keeps one job of each rule per level of its
# topological sort), and without it a fit with data (after simulate) sits one level deeper than
# a fit without, so fit, reference, predict and check were each drawn twice.


rule model:
    """The config slice of one model, as its fits and its reference see it (JSON)."""
    output:
        spec=out("models/{model}.json"),
    params:
        spec=lambda wildcards: model_spec(wildcards.model),
    wildcard_constraints:
        model="|".join(map(re.escape, MODELS)) or "no-models",
    log:
        out("logs/model/{model}.log"),
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        CONDA_ENV
    script:
        "../../scripts/model.py"
