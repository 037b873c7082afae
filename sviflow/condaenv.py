"""The conda environment file of the workflow's rules under ``snakemake --use-conda``.

environment.yml installs sviflow with ``pip: -e .``, which conda resolves against the directory
of the file it is given: conda/env/installers/pip.py runs pip with
``cwd=os.path.dirname(os.path.abspath(file))``. That is right for ``conda env create -f
environment.yml``, and wrong under Snakemake, which copies a rule's env file into its conda
prefix (``.snakemake/conda/<hash>.yaml`` unless ``--conda-prefix`` says otherwise) and creates
the environment from the copy (snakemake/deployment/conda.py, ``Env.create``, its
``create_env``): ``-e .`` would then name ``.snakemake/conda/``, where there is no project.

:func:`write_conda_environment` writes environment.yml again with its pip paths absolute. The
copy also names the checkout and the hash of pyproject.toml, because Snakemake names an
environment by the hash of its file's content: another checkout, or other pins, get an
environment of their own, not one installed from elsewhere. The install stays editable (``-e``):
a job runs the checkout's sviflow as it is now, which is what the rules' ``library`` inputs
assume (an edit of a module reruns its jobs, not the environment).
"""

from __future__ import annotations

import hashlib
import os
import shlex

import yaml

PATH_OPTIONS = ("-e", "--editable", "-r", "--requirement", "-c", "--constraint")


def absolute_pip_entry(entry: str, base: str) -> str:
    """A pip requirement line with its local path (``-e PATH``, ``-r FILE``, ``./PATH``) made
    absolute against ``base``; any other line (``package==1.0``, a URL) unchanged."""
    option, _, value = entry.strip().partition(" ")
    if option in PATH_OPTIONS and value.strip():
        path = shlex.split(value)[0]
        if "://" in path or os.path.isabs(path):
            return entry
        return f"{option} {shlex.quote(os.path.normpath(os.path.join(base, path)))}"
    if entry == "." or entry.startswith(("./", "../")):
        return shlex.quote(os.path.normpath(os.path.join(base, entry)))
    return entry


def conda_environment_text(source: str, pyproject: str) -> str:
    """``source`` (an env file) with its pip paths absolute against its own directory, headed
    by a comment that names it and pyproject.toml's sha256."""
    base = os.path.dirname(os.path.abspath(source))
    with open(source) as handle:
        spec = yaml.safe_load(handle)
    spec["dependencies"] = [
        {**item, "pip": [absolute_pip_entry(str(entry), base) for entry in item["pip"]]}
        if isinstance(item, dict) and "pip" in item
        else item
        for item in spec.get("dependencies", [])
    ]
    with open(pyproject, "rb") as handle:
        pins = hashlib.sha256(handle.read()).hexdigest()
    return (
        f"# Written for snakemake --use-conda from {os.path.abspath(source)}, its pip paths\n"
        f"# absolute (sviflow/condaenv.py says why); pyproject.toml sha256 {pins}\n"
        + yaml.safe_dump(spec, sort_keys=False)
    )


def write_conda_environment(source: str, pyproject: str, destination: str) -> str:
    """Write :func:`conda_environment_text` to ``destination``; -> ``destination``. Written only
    when the text changes (every SLURM job reads the workflow again), by rename, so that no
    process reads half a file."""
    text = conda_environment_text(source, pyproject)
    try:
        with open(destination) as handle:
            if handle.read() == text:
                return destination
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
    partial = f"{destination}.{os.getpid()}.partial"
    with open(partial, "w") as handle:
        handle.write(text)
    os.replace(partial, destination)
    return destination
