"""The user's own Python files, named in the config as ``path/to/file.py:function``: whether a
file defines the function (read from its syntax, without running it), loading the function,
and the place in the user's file where an error arose.

Every error names the config key it came from (``where``) and the file."""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path

from sviflow.errors import ConfigError


def is_file_reference(name) -> bool:
    return isinstance(name, str) and ":" in name and name.split(":", 1)[0].endswith(".py")


def defined_names(path: Path) -> tuple[list[str], list[str]]:
    """(functions, other names) a Python file defines at its top level (def; classes,
    assignments, imports), read from its syntax tree: the file is not run, jax is not started."""
    path = Path(path)
    functions, others = _defined_names(str(path.resolve()), path.stat().st_mtime_ns)
    return list(functions), list(others)


@functools.lru_cache(maxsize=64)
def _defined_names(path: str, mtime_ns: int):
    # the workflow asks once per job and input function: parse each version of a file once
    tree = ast.parse(Path(path).read_text(), filename=path)
    functions, others = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node.name)
        elif isinstance(node, ast.ClassDef):
            others.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            others += [t.id for t in targets if isinstance(t, ast.Name)]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            others += [(a.asname or a.name).split(".")[0] for a in node.names]
    return tuple(functions), tuple(others)


def check_reference(reference: str, where: str, path: Path | None = None) -> None:
    """``path/to/file.py:function``: the file exists, parses, and defines ``function``.

    ``path`` is where the file is looked for (the config's path made relative to the working
    directory); by default the reference's own path."""
    path_text, _, function_name = reference.partition(":")
    path = Path(path if path is not None else path_text)
    if not path.is_file():
        raise ConfigError(
            f"{where}: file {path_text!r} not found (looked for {path}); paths "
            f"are relative to the config file"
        )
    if not function_name:
        raise ConfigError(f"{where}: {reference!r} names no function; write {path_text}:function")
    try:
        functions, others = defined_names(path)
    except SyntaxError as error:
        raise ConfigError(f"{where}: {path}, line {error.lineno}: syntax error: {error.msg}") from error
    if function_name not in functions and function_name not in others and "*" not in others:
        raise ConfigError(
            f"{where}: {path} has no function {function_name!r}; functions in "
            f"that file: {', '.join(functions) or 'none'}"
        )


def _user_location(error: BaseException, paths) -> str:
    """' (path, line N: code)' for the deepest frame of ``error``'s traceback in one of ``paths``."""
    wanted = {os.path.realpath(p) for p in paths if p}
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) in wanted]
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({frame.filename}, line {frame.lineno}: {(frame.line or '').strip()})"


def load_function(reference: str, where: str):
    """Load ``function`` from ``path/to/file.py:function``."""
    path_text, _, function_name = reference.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(
            f"{where}: file {path_text!r} not found (paths are relative to the "
            f"config file); fix the path or create the file"
        )
    module_name = f"sviflow_user_{abs(hash(str(path.resolve())))}"
    if module_name in sys.modules:
        module = sys.modules[module_name]
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        # the file may import its neighbours (helpers of the model); only it is tracked for reruns
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.append(folder)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # the user's file: any error is theirs to see, with its place
            raise ConfigError(
                f"{where}: importing {path_text} failed: "
                f"{type(error).__name__}: {error}"
                f"{_user_location(error, [path])}"
            ) from error
        sys.modules[module_name] = module
    function = getattr(module, function_name, None)
    if not callable(function):
        available = sorted(
            n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module_name
        )
        raise ConfigError(
            f"{where}: {path_text} has no function {function_name!r}; "
            f"functions in that file: {', '.join(available) or 'none'}"
        )
    return function
