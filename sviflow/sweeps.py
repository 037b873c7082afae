"""Sweeps: one fit block with lists to expand into a grid of named fits.

A fit block with ``sweep: {optimizer.step_size: [1e-3, 1e-2], seed: [1, 2]}`` stands for one fit
per combination of the listed values (their Cartesian product), each a copy of the block with
those values set at those dotted keys. The members are named by Snakemake's ``Paramspace``
(``filename_params="*"``): ``<sweep>/step_size~0.001_seed~1``, so that a sweep's files sit in a
folder of their own (``results/fits/<sweep>/...``) and every member is a fit like any other, with
its own results, validated against the schema, its own reruns.

:func:`expand` runs inside :func:`sviflow.config.validate`, which keeps what it returns in the
config under :data:`KEY` for :class:`sviflow.config.Plan` (the sweep figure, the sweep table).
"""

from __future__ import annotations

import copy
import itertools
import re

from sviflow.errors import ConfigError

KEY = "_sweeps"  # where validate() keeps the sweeps of an expanded config (not a config key)
# what a value may print as, to be part of a member's name (a file name)
VALUE = re.compile(r"[A-Za-z0-9_.+-]+")
# keys a sweep may not set: what names the member, or another sweep
FORBIDDEN = ("sweep",)


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


def expand(config: dict) -> dict:
    """Replace each fit block with a ``sweep`` by its members, in place and in order.

    -> ``{sweep: {"keys": [dotted keys], "columns": [short names], "members": {member name:
    {dotted key: value}}}}``. Called after the schema has checked the blocks (so a sweep's
    values are non-empty lists of distinct values); the members are checked after."""
    import pandas as pd
    from snakemake.utils import Paramspace

    fits = config.get("fits") or {}
    if not any(isinstance(entry, dict) and "sweep" in entry for entry in fits.values()):
        return {}
    sweeps, expanded = {}, {}
    for name, entry in fits.items():
        if not (isinstance(entry, dict) and "sweep" in entry):
            expanded[name] = entry
            continue
        where = f"fits.{name}.sweep"
        grid = entry["sweep"]
        keys = list(grid)
        for key in keys:
            if key.split(".")[0] in FORBIDDEN:
                raise ConfigError(f"{where}.{key}: a sweep cannot set {key.split('.')[0]}")
            for value in grid[key]:
                if isinstance(value, (dict, list)) or not VALUE.fullmatch(_shown(value)):
                    raise ConfigError(
                        f"{where}.{key}: the value {value!r} cannot be part of a fit's name "
                        f"(a file name under results/); sweep numbers, true/false or names "
                        f"of letters, digits, _, ., + and -"
                    )
        names = columns(keys)
        combinations = list(itertools.product(*(grid[key] for key in keys)))
        # Paramspace names each row; the values themselves are taken from the config (pandas
        # would turn the ints of a column that also holds floats into floats)
        frame = pd.DataFrame([[_shown(v) for v in row] for row in combinations], columns=names)
        space = Paramspace(frame, filename_params="*")
        base = {key: value for key, value in entry.items() if key != "sweep"}
        members = {}
        for row, pattern in zip(combinations, space.instance_patterns):
            member = copy.deepcopy(base)
            for key, value in zip(keys, row):
                _set(member, key, value, where)
            member_name = f"{name}/{pattern}"
            if member_name in fits or member_name in expanded:
                raise ConfigError(f"{where}: its member {member_name} is also a fit of its own; rename one")
            expanded[member_name] = member
            members[member_name] = dict(zip(keys, row))
        sweeps[name] = {"keys": keys, "columns": names, "members": members}
    fits.clear()
    fits.update(expanded)
    return sweeps


def member_of(sweeps: dict, fit: str) -> str | None:
    """The sweep that ``fit`` is a member of, or None."""
    return next((name for name, sweep in sweeps.items() if fit in sweep["members"]), None)
