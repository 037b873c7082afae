# The env file every rule names (`conda: CONDA_ENV`). With --use-conda, environment.yml with its
# pip paths absolute: Snakemake creates an environment from a copy of the file in its conda
# prefix, where environment.yml's `-e .` would not name this checkout (sviflow/condaenv.py).
import os

from snakemake.settings.types import DeploymentMethod

from sviflow.condaenv import write_conda_environment

_ENVIRONMENT_YML = os.path.join(workflow.basedir, "environment.yml")
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    CONDA_ENV = write_conda_environment(
        _ENVIRONMENT_YML,
        os.path.join(workflow.basedir, "pyproject.toml"),
        os.path.abspath(os.path.join(".snakemake", "sviflow", "environment.yml")),
    )
else:  # without --use-conda the directive is never deployed: nothing is written
    CONDA_ENV = _ENVIRONMENT_YML
