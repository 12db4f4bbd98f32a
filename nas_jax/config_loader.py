"""The one config loader: a config file, its preset and ``key=value`` overrides (the launcher's
``--config=FILE[:preset] --config.KEY=VALUE``, the study grid's cells and the Ray driver all load through
:func:`load`). Overrides are read by the type the key holds (:func:`override`); the schema, presets and checks
are :mod:`nas_jax.config`.
"""

from __future__ import annotations

import ast
import operator
from pathlib import Path

import ml_collections

from nas_jax.errors import UserError


def load_config_file(path: str | Path, preset: str = "") -> ml_collections.ConfigDict:
    """``get_config(preset)`` of the config file at ``path`` (``get_config()`` without a preset), loaded as the
    launcher's ``--config=PATH[:preset]`` flag loads it."""
    import importlib.util

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no config file {path}; the task configs are configs/<task>.py (e.g. configs/pgd.py).")
    spec = importlib.util.spec_from_file_location(f"nas_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset) if preset else module.get_config()


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def numeric_expression(text: str) -> float | None:
    """The value of ``text`` when it is arithmetic on numbers, as papers write budgets (``4/255``, ``2*8/255``,
    ``-1e-3``); None for anything else (names, calls, tuples), which is never evaluated."""
    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
            return _ARITHMETIC[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"not arithmetic: {ast.dump(node)}")

    try:
        return float(value(ast.parse(str(text).strip(), mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def load(spec: str | Path, overrides=()) -> ml_collections.ConfigDict:
    """The one config loader (the launcher, the study grid's cells and the Ray driver): ``get_config(preset)``
    of ``PATH[:preset]``, then each ``key=value`` override in order (:func:`override`), locked (no new keys)."""
    path, _, preset = str(spec).partition(":")
    config = load_config_file(path, preset)
    for text in overrides:
        override(config, text)
    config.lock()
    return config


def split_argv(argv: list[str]) -> tuple[str | None, list[str], list[str]]:
    """(``PATH[:preset]`` of ``--config=``, the ``key=value`` of each ``--config.key=value``, the other arguments)."""
    spec, overrides, rest = None, [], []
    for arg in argv:
        if arg.startswith("--config="):
            spec = arg[len("--config="):]
        elif arg.startswith("--config.") and "=" in arg:
            overrides.append(arg[len("--config."):])
        else:
            rest.append(arg)
    return spec, overrides, rest


# Keys of earlier versions, with the key that holds the setting now.
MOVED = {"train.seeds": "seeds (and train.population: several seeds trained in one program)",
         "study.seeds": "seeds", "search.partial_k": "search.pc_darts.k",
         "search.tau_max": "search.gdas.tau_max or search.snas.tau_max",
         "search.tau_min": "search.gdas.tau_min or search.snas.tau_min", "search.drnas_reg": "search.drnas.reg",
         "search.random_candidates": "search.random.candidates",
         "search.random_eval_batches": "search.random.eval_batches"}


def override(config: ml_collections.ConfigDict, text: str) -> None:
    """Apply ``"a.b=value"``, the value read by the type the key holds: a float takes arithmetic as papers write
    it (``pgd.eps=4/255``), an int an integer, a bool true/false, a tuple a Python literal (one value: a tuple
    of one), a string its text.
    An unknown key or a value of the wrong type is refused with the fix."""
    key, sep, value = str(text).partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"a config override must be key=value (e.g. train.epochs=4), got {text!r}.")
    node, path = config, []
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            if key in MOVED:
                raise UserError(f"--config.{key} has moved: set --config.{MOVED[key]} instead.")
            where = ".".join(path)
            valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise UserError(f"unknown config key {key!r}: {where + '.' if where else ''}{part} does not exist. "
                            f"Valid keys{' under ' + repr(where) if where else ''}: {valid}.")
        parent, node, path = node, node[part], [*path, part]
    parent[path[-1]] = _typed(key, node, value)


def _typed(key: str, current, text: str):
    """``text`` as a value of ``current``'s type (module docstring of :func:`override`)."""
    fail = lambda kind, example: UserError(
        f"--config.{key}={text!r}: {key} holds {kind}; e.g. --config.{key}={example}.")
    if isinstance(current, ml_collections.ConfigDict):
        raise UserError(f"--config.{key} is a section: set its keys, e.g. --config.{key}.{next(iter(current), 'x')}=...")
    if isinstance(current, bool):
        if text.strip().lower() not in ("true", "false", "1", "0"):
            raise fail("true or false", "True")
        return text.strip().lower() in ("true", "1")
    if isinstance(current, str):
        return text
    if isinstance(current, float):
        number = numeric_expression(text)
        if number is None:
            raise fail("a number", "4/255")
        return number
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        value = text
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer", current)
        return value
    if isinstance(current, tuple | list):  # one value is a tuple of one: models=darts, models="('darts')"
        return tuple(value) if isinstance(value, tuple | list) else (value,)
    return value
