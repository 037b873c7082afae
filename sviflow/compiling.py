"""How sviflow compiles the programs that a step runs once or a few times."""

from __future__ import annotations

import jax

# XLA's backend (LLVM) optimisation level for the programs a step runs once or a few times: the
# guide's draws for its moments, the predictive paths and their log weights, the grid
# references. Their compile is most of their cost (the Beta guide's gamma sampler: 2.1 s to
# compile at XLA's default level 2, 1.3 s at 0, measured on 2 cores), their run a few ms. The
# SVI step, run thousands of times, keeps XLA's default (``jax.jit``).
RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_once(function, **kwargs):
    """``jax.jit(function)`` for a program that runs once or a few times per job: compiled at
    XLA's backend optimisation level 0 (:data:`RUN_ONCE_OPTIONS`), which halves its compile
    time. The same program always gets the same options, so its numbers are bit for bit the
    same from run to run, by hand or in the workflow, alone or in a batch."""
    return jax.jit(function, compiler_options=RUN_ONCE_OPTIONS, **kwargs)


_split = jit_once(jax.random.split, static_argnums=1)


def split_keys(seed: int, num: int):
    """``jax.random.split(PRNGKey(seed), num)``, the split compiled by :func:`jit_once`: run
    eagerly, XLA compiles it at its default level (0.14-0.28 s of a job); the keys are integers,
    the same at any level."""
    return _split(jax.random.PRNGKey(seed), num)
