"""`snakemake --use-conda`: the environment the rules name must install this checkout's sviflow
when conda creates it where Snakemake does. conda cannot be installed here, so what conda does
is taken from its source, and what Snakemake does from its own objects:

- Snakemake copies a rule's env file to ``<conda-prefix>/<hash>.yaml`` and runs
  ``conda env create --file <that copy>`` (snakemake/deployment/conda.py, ``Env.create``:
  ``target_env_file = env_path + ".yaml"``; the prefix is ``.snakemake/conda`` unless
  ``--conda-prefix`` says otherwise);
- conda runs the pip section with ``cwd=os.path.dirname(os.path.abspath(file))``, the
  directory of the file it was given (conda/env/installers/pip.py, ``install``), so a relative
  path in it is relative to the copy.

The rules' env file is read from the parsed workflow (Snakemake's API, in a subprocess: parsing
sets environment variables)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow

PROBE = """
import json
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import (ConfigSettings, DeploymentSettings, OutputSettings,
                                      ResourceSettings, StorageSettings)
from snakemake_interface_executor_plugins.settings import DeploymentMethod

with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(), config_settings=ConfigSettings(),
        storage_settings=StorageSettings(), snakefile=Path("Snakefile"), workdir=Path.cwd(),
        deployment_settings=DeploymentSettings(deployment_method={%s}))
    print(json.dumps({rule.name: None if rule.conda_env is None else str(rule.conda_env)
                      for rule in workflow._workflow.rules}))
"""


def _rule_envs(workdir: Path, use_conda: bool) -> dict:
    """Each rule's `conda:` env file as the parsed workflow holds it, with or without --use-conda."""
    code = PROBE % ("DeploymentMethod.CONDA" if use_conda else "")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(workdir)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _pip_install_targets(env_file: Path, pip_workdir: Path) -> list[Path]:
    """The local paths that pip installs from the env file's pip section (`-e PATH`, `PATH`),
    resolved as pip does, from conda's working directory for pip."""
    spec = yaml.safe_load(env_file.read_text())
    targets = []
    for item in spec["dependencies"]:
        if isinstance(item, dict):
            for entry in item["pip"]:
                words = shlex.split(entry)
                path = words[1] if words[0] in ("-e", "--editable") else words[0]
                if "==" not in path:
                    targets.append((pip_workdir / path).resolve())
    return targets


def _is_sviflow_project(path: Path) -> bool:
    pyproject = path / "pyproject.toml"
    return pyproject.is_file() and tomllib.loads(pyproject.read_text())["project"]["name"] == "sviflow"


@pytest.mark.workflow
def test_use_conda_env_installs_this_checkout_from_snakemakes_copy(tmp_path):
    """With --use-conda every rule names one env file; conda, given Snakemake's copy of it in
    .snakemake/conda/ (or any --conda-prefix), installs this checkout's sviflow, editable.
    environment.yml itself (`-e .`) would install from .snakemake/conda/: no project there."""
    workdir = copy_workflow(tmp_path / "workflow")
    envs = _rule_envs(workdir, use_conda=True)
    assert envs.pop("all") is None
    files = set(envs.values())
    assert len(files) == 1, envs  # one environment for every job
    # a relative path is relative to the rule file (Rule.expand_conda_env); the rules are in
    # workflow/rules/
    env_file = (workdir / "workflow" / "rules" / files.pop()).resolve()
    assert env_file.is_file()
    for conda_prefix in (workdir / ".snakemake" / "conda", tmp_path / "elsewhere" / "envs"):
        targets = _pip_install_targets(env_file, conda_prefix)
        assert targets == [workdir.resolve()], (conda_prefix, targets)
        assert _is_sviflow_project(targets[0])
    assert "-e " in env_file.read_text()  # editable: jobs run the checkout's code as it is now

    # the rest is environment.yml's (the one place that says which Python)
    derived, source = (
        yaml.safe_load(env_file.read_text()),
        yaml.safe_load((workdir / "environment.yml").read_text()),
    )

    def strip(spec):
        return [d for d in spec["dependencies"] if not isinstance(d, dict)]

    assert strip(derived) == strip(source) and derived["channels"] == source["channels"]
    # `conda env create -f environment.yml` by hand: conda runs pip beside the file
    assert _pip_install_targets(workdir / "environment.yml", workdir) == [workdir.resolve()]


@pytest.mark.workflow
def test_conda_env_file_names_the_checkout_and_the_pins(tmp_path):
    """Snakemake names an environment by the hash of its file's content: another checkout, or
    other pins in pyproject.toml, must give other content, so they get an environment of their
    own. Without --use-conda nothing is written."""
    first = copy_workflow(tmp_path / "first")
    second = copy_workflow(tmp_path / "second")
    plain = _rule_envs(first, use_conda=False)
    assert set(plain.values()) - {None} == {str(first / "environment.yml")}
    assert not (first / ".snakemake" / "sviflow").exists()

    def content(workdir):
        return Path(next(v for v in _rule_envs(workdir, use_conda=True).values() if v)).read_text()

    one, other = content(first), content(second)
    assert one != other
    assert one.replace(str(first), str(second)) == other
    pyproject = second / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"numpy==', '"numpy>=', 1))
    assert content(second) != other


def test_pip_paths_are_made_absolute_against_the_env_files_directory():
    """Every local path pip accepts in a requirements line, and nothing else."""
    from sviflow.condaenv import absolute_pip_entry

    base = "/work/checkout"
    assert absolute_pip_entry("-e .", base) == "-e /work/checkout"
    assert absolute_pip_entry("--editable ../other", base) == "--editable /work/other"
    assert absolute_pip_entry("-r requirements.txt", base) == "-r /work/checkout/requirements.txt"
    assert absolute_pip_entry("./vendor/pkg", base) == "/work/checkout/vendor/pkg"
    assert absolute_pip_entry("-e /abs/path", base) == "-e /abs/path"
    assert (
        absolute_pip_entry("-e git+https://host/repo.git#egg=x", base) == "-e git+https://host/repo.git#egg=x"
    )
    assert absolute_pip_entry("numpy==2.4.6", base) == "numpy==2.4.6"
    # pip splits an option's value as a shell would: a path with a space stays one path
    assert shlex.split(absolute_pip_entry("-e .", "/with space/x"))[1] == "/with space/x"
