"""sviflow.config without Snakemake: the config's validation and its messages, the names and
output paths it refuses, each job's config slice, and the schema as the one home of defaults."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from sviflow import config as cfg
from sviflow import convergence, diagnostics, optim
from sviflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def coin_config(**fits) -> dict:
    """A config of coin fits on one dataset; ``fits`` override or add fit entries."""
    config = {
        "models": {"coin": {"function": "coin_flips", "reference": {"method": "exact"}}},
        "datasets": {"coin_12_8": {"generator": "coin_flips", "args": {"heads": 12, "tails": 8}}},
        "fits": {"beta": {"model": "coin", "data": "coin_12_8", "guide": {"name": "beta"}, "steps": 1000}},
    }
    config["fits"].update(fits)
    return config


def plan(config: dict, config_dir=REPO / "config") -> cfg.Plan:
    config = copy.deepcopy(config)
    cfg.validate(config)
    return cfg.Plan(config, config_dir)


def test_the_default_and_example_configs_are_valid():
    plan(DEFAULT_CONFIG)
    example = REPO / "config" / "examples" / "linear_regression"
    plan(yaml.safe_load((example / "config.yaml").read_text()), example)


# --- validation messages -----------------------------------------------------------------------


def test_an_unknown_key_is_named_with_the_closest_allowed_one():
    config = coin_config()
    config["fits"]["beta"]["step"] = 10
    with pytest.raises(ConfigError, match=r"^fits\.beta: .*'step'.*did you mean 'steps'\?"):
        cfg.validate(config)


@pytest.mark.parametrize(
    "seed, message",
    [
        ([], r"^fits\.beta\.seed: the list is empty; give at least 1 value"),
        ([1, 1], r"^fits\.beta\.seed: 1 given more than once; each value may appear once"),
        ([3, 1, 3, 1], r"^fits\.beta\.seed: 3, 1 given more than once"),
    ],
)
def test_an_empty_or_repeated_seed_list_says_so(seed, message):
    """Not "not valid under any of the given schemas" (issue 17, case 6)."""
    config = coin_config()
    config["fits"]["beta"]["seed"] = seed
    with pytest.raises(ConfigError, match=message):
        cfg.validate(config)


def test_a_number_out_of_range_names_its_key_and_the_bound():
    config = coin_config()
    config["fits"]["beta"]["steps"] = 0
    with pytest.raises(ConfigError, match=r"^fits\.beta\.steps: .*integer >= 1"):
        cfg.validate(config)


# --- names and outputs that would collide (issue 17, case 1) -----------------------------------


def test_two_model_dataset_pairs_never_share_a_reference():
    """Model a on dataset b--c and model a--b on dataset c were both reference a--b--c: the
    second fit was checked against the first one's posterior. '--' is refused in names."""
    config = {
        "models": {
            "a": {"function": "coin_flips", "reference": {"method": "exact"}},
            "a--b": {"function": "coin_flips", "reference": {"method": "exact"}},
        },
        "datasets": {
            "b--c": {"generator": "coin_flips", "args": {"heads": 1, "tails": 1}},
            "c": {"generator": "coin_flips", "args": {"heads": 9, "tails": 1}},
        },
        "fits": {
            "one": {"model": "a", "data": "b--c", "guide": {"name": "beta"}, "steps": 10},
            "two": {"model": "a--b", "data": "c", "guide": {"name": "beta"}, "steps": 10},
        },
    }
    with pytest.raises(ConfigError, match=r"^models\.a--b: a name may not hold '--'"):
        plan(config)


def test_a_model_name_with_a_double_dash_is_refused_not_a_key_error():
    config = coin_config()
    config["models"]["my--coin"] = config["models"].pop("coin")
    config["fits"]["beta"]["model"] = "my--coin"
    with pytest.raises(ConfigError, match=r"^models\.my--coin: a name may not hold '--'.*use '-' or '_'"):
        plan(config)


def test_a_name_ending_in_a_newline_is_refused():
    """The schema's pattern ends in $, which matches before a final newline: it lets 'beta\\n'
    through; the plan matches the whole name."""
    config = coin_config()
    config["fits"]["beta\n"] = config["fits"].pop("beta")
    cfg.validate(copy.deepcopy(config))  # the schema alone accepts it
    with pytest.raises(ConfigError, match=r"^fits\.'beta\\n': not a valid name.*ends in a newline"):
        plan(config)


def test_a_fit_named_comparisons_is_refused():
    """Its figures would go to results/figures/comparisons/, the comparisons' folder."""
    config = coin_config(
        comparisons={"model": "coin", "data": "coin_12_8", "guide": {"name": "beta"}, "steps": 10}
    )
    with pytest.raises(ConfigError, match=r"^fits\.comparisons: results/figures/comparisons/"):
        plan(config)


def test_a_dataset_named_none_is_refused():
    """'<model>--none' is the reference of a model without data."""
    config = coin_config()
    config["datasets"]["none"] = config["datasets"].pop("coin_12_8")
    config["fits"]["beta"]["data"] = "none"
    with pytest.raises(ConfigError, match=r"^datasets\.none: 'none' stands for no data"):
        plan(config)


def test_every_output_path_has_one_owner():
    paths = [path for owned in plan(DEFAULT_CONFIG).output_paths().values() for path in owned]
    assert len(paths) == len(set(paths))


def test_a_fit_that_names_an_unknown_model_or_dataset_lists_the_valid_ones():
    config = coin_config()
    config["fits"]["beta"]["model"] = "coins"
    with pytest.raises(
        ConfigError, match=r"^fits\.beta\.model: 'coins' is not a key of models \(models: coin\)"
    ):
        plan(config)


def test_a_missing_model_file_is_named_with_where_it_was_looked_for(tmp_path):
    config = coin_config()
    config["models"]["coin"]["function"] = "mine.py:model"
    with pytest.raises(
        ConfigError,
        match=r"^models\.coin\.function: file 'mine\.py' not found "
        r"\(looked for .*mine\.py\); paths are relative",
    ):
        plan(config, tmp_path)
    (tmp_path / "mine.py").write_text("def model():\n    pass\n")
    spec = plan(config, tmp_path).model_spec("coin")
    assert Path(spec["function"].split(":")[0]).resolve() == (tmp_path / "mine.py").resolve()


# --- the jobs' slices -------------------------------------------------------------------------


def test_a_fit_spec_has_every_default_and_sorted_keys():
    spec = plan(coin_config()).fit_spec("beta")
    assert spec["optimizer"] == {"args": {}, "name": "Adam", "step_size": 5.0e-4}
    assert spec["elbo"] == {"args": {}, "name": "Trace_ELBO", "num_particles": 1}
    assert spec["seeds"] == [0] and spec["init"] == "guide" and spec["stable_update"] is False
    assert spec["convergence"] == cfg.schema_defaults("checks", "convergence")
    assert list(spec) == sorted(spec)


def test_reordering_a_config_changes_no_spec():
    """Params compare by their printed form: a reordered config reruns nothing."""
    config = coin_config()
    reordered = copy.deepcopy(config)
    reordered["fits"]["beta"] = dict(reversed(list(config["fits"]["beta"].items())))
    assert repr(plan(config).fit_spec("beta")) == repr(plan(reordered).fit_spec("beta"))


def test_a_budget_gets_its_defaults_and_an_autoguide_a_laplace_start():
    config = coin_config(
        mvn={
            "model": "coin",
            "data": "coin_12_8",
            "guide": {"name": "AutoMultivariateNormal"},
            "steps": {"max": 9000},
        }
    )
    the_plan = plan(config)
    assert the_plan.fit_spec("mvn")["steps"] == {"decay": 0.5, "max": 9000, "max_decays": 10, "min": 2000}
    assert the_plan.fit_spec("mvn")["init"] == "laplace"
    # a budget stops between chunks: their number is in its spec (a change reruns it), and
    # only in its spec (a fixed number of steps runs the same numbers in any chunks)
    assert the_plan.fit_spec("mvn")["engine"] == {"chunks": 20, "trajectory_points": 1000}
    assert the_plan.fit_spec("beta")["engine"] == {"trajectory_points": 1000}
    config["fits"]["mvn"]["init"] = "guide"
    assert plan(config).fit_spec("mvn")["init"] == "guide"
    config["fits"]["mvn"]["steps"] = 9000  # a fixed number of steps: the post's start
    del config["fits"]["mvn"]["init"]
    assert plan(config).fit_spec("mvn")["init"] == "guide"


def test_the_budget_defaults_are_the_ones_the_schema_states():
    """The schema's oneOf cannot hold defaults; its descriptions state BUDGET_DEFAULTS."""
    budget = cfg.load_schema()["properties"]["fits"]["additionalProperties"]["properties"]["steps"]["oneOf"][
        1
    ]["properties"]
    for key, value in cfg.BUDGET_DEFAULTS.items():
        assert f"(default {value:g})" in budget[key]["description"], key


def test_the_check_slice_leaves_out_strict_and_predict_weighs_the_most_draws():
    config = coin_config()
    config["checks"] = {"strict": True, "quality": {"khat_particles": 20000}}
    the_plan = plan(config)
    assert "strict" not in the_plan.check_settings()
    assert the_plan.weighted_draws() == 20000
    assert "results/checks/strict.ok" in the_plan.all_outputs()


def test_references_figures_and_plot_rules_of_the_default_config():
    the_plan = plan(DEFAULT_CONFIG)
    assert the_plan.reference_ids() == ["coin--coin_12_8", "correlated--none", "multimodal--none"]
    assert cfg.Plan.split_reference("correlated--none") == ("correlated", None)
    assert the_plan.figures("autoguide") == ["loss", "trajectories", "posterior", "covariance"]
    assert the_plan.plot_rule("beta") == "plot_with_mock"
    assert the_plan.plot_rule("autoguide") == "plot_with_covariance"
    assert the_plan.plot_rule("multimodal") == "plot"
    assert the_plan.fit_inputs("beta") == {"code": [], "data": "results/data/coin_12_8.h5"}
    assert the_plan.with_reference("beta", fit="f.h5") == {
        "fit": "f.h5",
        "reference": "results/references/coin--coin_12_8.h5",
    }
    constraints = the_plan.wildcard_constraints()
    assert re.fullmatch(constraints["fit"], "beta") and not re.fullmatch(constraints["fit"], "bet")


# --- one home for each default (issue 20, item 2) ---------------------------------------------


def test_the_schema_defaults_are_what_snakemake_fills_in():
    """schema_defaults reads the same defaults that Snakemake's validate writes into a config."""
    config = coin_config()
    cfg.validate(config)
    for section in ("checks", "predictive", "engine"):
        assert config[section] == cfg.schema_defaults(section), section
    fit = config["fits"]["beta"]
    for key, value in cfg.schema_defaults("fits").items():
        assert fit[key] == value, key
    assert config["models"]["coin"]["reference"] == {
        **cfg.schema_defaults("models", "reference"),
        "method": "exact",
    }


def test_the_library_reads_its_defaults_from_the_schema():
    assert diagnostics.DEFAULTS == cfg.schema_defaults("checks")
    assert convergence.DEFAULTS == {
        k: v for k, v in cfg.schema_defaults("checks", "convergence").items() if k != "draws"
    }
    assert optim.make_elbo({}).num_particles == cfg.default("fits", "elbo", "num_particles")
    assert cfg.default("engine", "trajectory_points") == 1000


def test_a_results_key_puts_every_output_under_its_folder():
    """Issue 18, item 4: each config its own results."""
    config = coin_config()
    config["results"] = "results/other/"
    the_plan = plan(config)
    paths = [path for owned in the_plan.output_paths().values() for path in owned]
    assert paths and all(path.startswith("results/other/") for path in paths)
    assert "results/other/summary.md" in the_plan.all_outputs()
    assert the_plan.fit_inputs("beta")["data"] == "results/other/data/coin_12_8.h5"
    assert plan(coin_config()).out("summary.md") == "results/summary.md"


@pytest.mark.parametrize("results", ["/tmp/elsewhere", "../outside", ".", "results/../.."])
def test_a_results_folder_outside_the_working_directory_is_refused(results):
    config = coin_config()
    config["results"] = results
    with pytest.raises(ConfigError, match=r"^results: .*a folder inside the working directory"):
        plan(config)


def test_a_fits_priority_is_log10_of_its_work_and_a_budgets_is_its_max():
    """Snakemake starts the fits that take longest first (Plan.priority): steps x particles x
    seeds, a budget's max steps, a batch's sum."""
    config = coin_config(
        long={
            "model": "coin",
            "data": "coin_12_8",
            "guide": {"name": "beta"},
            "steps": {"min": 100, "max": 100_000},
            "elbo": {"num_particles": 4},
            "seed": [1, 2],
        }
    )
    plan_ = plan(config)
    assert plan_.priority("beta") == 3.0
    assert plan_.priority("long") == round(math.log10(100_000 * 4 * 2), 3)
    assert plan_.priority("beta", "long") == round(math.log10(1000 + 800_000), 3)
