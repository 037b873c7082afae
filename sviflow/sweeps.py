"""Sweeps: one fit (or dataset) block with lists to expand into a grid of named fits.

A fit block with ``sweep: {optimizer.step_size: [1e-3, 1e-2], seed: [1, 2]}`` stands for one fit
per combination of the listed values (their Cartesian product), each a copy of the block with
those values set at those dotted keys. The members are named by Snakemake's ``Paramspace``
(``filename_params="*"``): ``<sweep>/step_size~0.001_seed~1``, so that a sweep's files sit in a
folder of their own (``results/fits/<sweep>/...``) and every member is a fit like any other, with
its own results, validated against the schema, its own reruns.

:func:`expand` runs inside :func:`sviflow.config.validate`, which keeps what it returns in the
config under :data:`KEY` for :class:`sviflow.config.Plan` (the sweep figure, the sweep table).

A dataset block's ``sweep`` (``datasets.coins.sweep: {args.seed: [0, 1, 2]}``) makes datasets
named the same way (``coins/seed~0``); a fit with ``data: coins`` is then a sweep over them, one
fit per dataset (``<fit>/data~coins-seed-0``), batched as one program where their data have
one shape (config/README.md, "Sweeps over datasets").
"""

from __future__ import annotations

import copy
import itertools
import re

from sviflow.errors import ConfigError

KEY = "_sweeps"  # where validate() keeps the sweeps of an expanded config (not a config key)
DATASETS_KEY = "_dataset_sweeps"  # ... and its datasets' sweeps
# what a value may print as, to be part of a member's name (a file name)
VALUE = re.compile(r"[A-Za-z0-9_.+-]+")
# keys a sweep may not set: what names the member, or another sweep
FORBIDDEN = ("sweep",)
SINGULAR = {"fits": "fit", "datasets": "dataset"}


def columns(keys: list[str]) -> list[str]:
    """The short name of each swept key in member names and tables: its last part
    (``optimizer.step_size`` -> ``step_size``), or the whole key where two keys share it."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last)]


def _set(entry: dict, key: str, value, where: str) -> None:
    node = entry
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"{where}.{key}: {'.'.join(parts[: parts.index(part) + 1])} is "
                f"{child!r}, not a block of keys; sweep a key inside a block (such as optimizer.step_size)"
            )
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _shown(value) -> str:
    """How a value prints in a member's name (Paramspace's str())."""
    return str(value)


def _grid(section: str, name: str, entry: dict, taken, labels: dict | None = None) -> tuple[dict, dict]:
    """One block with a ``sweep`` -> (its members' entries by name, the sweep's info).
    ``labels``: for a key, how each of its values is written in the members' names (a dataset
    sweep's member ``coins/seed~0`` as ``coins-seed-0``); others print as themselves."""
    import pandas as pd
    from snakemake.utils import Paramspace

    where = f"{section}.{name}.sweep"
    grid = entry["sweep"]
    keys = list(grid)
    labels = labels or {}

    def label(key, value):
        return labels.get(key, {}).get(value, _shown(value))

    for key in keys:
        if key.split(".")[0] in FORBIDDEN:
            raise ConfigError(f"{where}.{key}: a sweep cannot set {key.split('.')[0]}")
        for value in grid[key]:
            if isinstance(value, (dict, list)) or not VALUE.fullmatch(label(key, value)):
                raise ConfigError(
                    f"{where}.{key}: the value {value!r} cannot be part of a {SINGULAR[section]}'s "
                    f"name (a file name under results/); sweep numbers, true/false or names "
                    f"of letters, digits, _, ., + and -"
                )
    names = columns(keys)
    combinations = list(itertools.product(*(grid[key] for key in keys)))
    # Paramspace names each row; the values themselves are taken from the config (pandas
    # would turn the ints of a column that also holds floats into floats). A column named by a
    # whole dotted key (two keys share their last part) is written with _ for its dots: pandas'
    # itertuples, which Paramspace uses, renames columns that are not identifiers (_0, _1)
    frame = pd.DataFrame(
        [[label(k, v) for k, v in zip(keys, row)] for row in combinations],
        columns=[name.replace(".", "_") for name in names],
    )
    space = Paramspace(frame, filename_params="*")
    base = {key: value for key, value in entry.items() if key != "sweep"}
    entries, members = {}, {}
    for row, pattern in zip(combinations, space.instance_patterns):
        member = copy.deepcopy(base)
        for key, value in zip(keys, row):
            _set(member, key, value, where)
        member_name = f"{name}/{pattern}"
        if member_name in taken or member_name in entries:
            raise ConfigError(
                f"{where}: its member {member_name} is also a {SINGULAR[section]} of its own; rename one"
            )
        entries[member_name] = member
        members[member_name] = dict(zip(keys, row))
    return entries, {"keys": keys, "columns": names, "members": members}


def data_label(member: str) -> str:
    """How a dataset sweep's member (``coins/seed~0``) is written in a fit's name."""
    return member.replace("/", "-").replace("~", "-")


def expand(config: dict) -> tuple[dict, dict]:
    """Replace each block of ``datasets`` and ``fits`` with a ``sweep`` by its members, in
    place and in order.

    -> (the fits' sweeps, the datasets' sweeps), each ``{sweep: {"keys": [dotted keys],
    "columns": [short names], "members": {member name: {dotted key: value}}}}``. A dataset
    sweep's members are datasets (``coins/seed~0``); a fit whose ``data`` names a dataset
    sweep is a sweep over its members (``data`` its first key, beside the fit's own sweep),
    and a fit sweep's ``data`` list may name a dataset sweep for all its members. Called
    after the schema has checked the blocks (so a sweep's values are non-empty lists of
    distinct values); the members are checked after."""
    dataset_sweeps = _expand_section(config, "datasets")
    labels = {"data": {m: data_label(m) for s in dataset_sweeps.values() for m in s["members"]}}
    if dataset_sweeps:
        _check_labels(config.get("datasets") or {}, labels["data"])
        fits = config.get("fits") or {}
        for name, entry in list(fits.items()):
            if isinstance(entry, dict):
                fits[name] = _over_dataset_sweeps(name, entry, dataset_sweeps)
    return _expand_section(config, "fits", labels), dataset_sweeps


def _check_labels(datasets: dict, labels: dict) -> None:
    """No two datasets may be written alike in a fit's name."""
    written = {}
    for dataset in datasets:
        shown = labels.get(dataset, dataset)
        if shown in written:
            raise ConfigError(
                f"datasets.{written[shown]} and datasets.{dataset} would be written the same in a "
                f"fit's name ({shown}: '/' and '~' become '-'); rename one"
            )
        written[shown] = dataset


def _over_dataset_sweeps(name: str, entry: dict, dataset_sweeps: dict) -> dict:
    """A fit block whose ``data`` (or sweep's ``data`` list) names a dataset sweep -> the block
    with a sweep over its datasets; any other block as it is."""
    grid = dict(entry.get("sweep") or {})
    if entry.get("data") in dataset_sweeps:
        if "data" in grid:
            raise ConfigError(
                f"fits.{name}: data names the dataset sweep {entry['data']!r} and its sweep "
                f"lists data too; give one of them"
            )
        grid = {"data": [entry["data"]], **grid}
    if "data" not in grid:
        return entry
    values = []
    for value in grid["data"]:
        values += list(dataset_sweeps[value]["members"]) if value in dataset_sweeps else [value]
    if len(set(values)) < len(values):
        raise ConfigError(
            f"fits.{name}.sweep.data: a dataset is listed twice (a member of a dataset sweep too)"
        )
    return {**entry, "data": values[0], "sweep": {**grid, "data": values}}


def _expand_section(config: dict, section: str, labels: dict | None = None) -> dict:
    entries = config.get(section) or {}
    if not any(isinstance(entry, dict) and "sweep" in entry for entry in entries.values()):
        return {}
    sweeps, expanded = {}, {}
    for name, entry in entries.items():
        if not (isinstance(entry, dict) and "sweep" in entry):
            expanded[name] = entry
            continue
        members, sweeps[name] = _grid(section, name, entry, set(entries) | set(expanded), labels)
        expanded.update(members)
    entries.clear()
    entries.update(expanded)
    return sweeps


def member_of(sweeps: dict, fit: str) -> str | None:
    """The sweep that ``fit`` is a member of, or None."""
    return next((name for name, sweep in sweeps.items() if fit in sweep["members"]), None)
