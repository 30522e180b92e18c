"""The one way a command starts: ``fire`` over a function, errors as one line, text arguments kept as text.

Every ``python -m <package>.<command>`` ends in :func:`run`:

- a failure prints one line, ``<command>: error: <what, naming the file and the reason>``, on stderr and exits
  with status 1; the traceback only with ``--debug`` (or ``AACTK_DEBUG=1`` in the environment);
- Ctrl-C exits with status 130 and one line;
- arguments named in ``text_args`` reach the function as the exact text typed: fire would otherwise read
  ``None``, ``42`` or ``[1,2]`` as Python values (and a very long word can exhaust its parser's memory);
- a parameter annotated ``bool`` takes ``true``/``false`` (``yes``/``no``, ``1``/``0``) in any case: fire would pass
  ``--progress false`` on as the text ``'false'``, which is truthy; any other word is refused.
"""
from __future__ import annotations

import errno
import inspect
import os
import sys
from typing import Any, Sequence

DEBUG_ENV = "AACTK_DEBUG"


def run(component: Any, name: str, *, text_args: Sequence[str] = (), argv: Sequence[str] | None = None) -> None:
    """Run ``component`` (a function, or a dict of sub-commands) as the command ``name`` with ``fire``."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = quote_text_args([a for a in args if a != "--debug"], text_args)
    try:
        args = bool_args(args, _bool_params(component, args))
        fire.Fire(component, command=args, name=name)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line unless --debug
        if debug:
            raise
        print(f"{name}: error: {describe_error(err)}", file=sys.stderr)
        sys.exit(1)


def describe_error(err: BaseException) -> str:
    """One line for a user: the message alone for the project's own errors, the type too for anything else."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = err.filename or "the output folder"
        return f"no space left on the device holding {where}"
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, (ValueError, OSError)):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err} (a bug? rerun with --debug and report the traceback)"
    return " ".join(text.split())  # one line


def quote_text_args(args: list[str], names: Sequence[str]) -> list[str]:
    """``--name value`` / ``--name=value`` for each of ``names`` -> ``--name=<value as a Python string literal>``,
    which fire passes on unchanged as a string."""
    if not names:
        return args
    flags = {f"--{n}" for n in names} | {f"--{n.replace('_', '-')}" for n in names}
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        flag, sep, value = arg.partition("=")
        if flag in flags and sep:
            out.append(f"{flag}={value!r}")
        elif arg in flags and i + 1 < len(args):
            out.append(f"{arg}={args[i + 1]!r}")
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _bool_params(component: Any, args: Sequence[str]) -> list[str]:
    """Names of the parameters annotated ``bool`` (or ``bool | None``) of the function the command line calls: the
    component itself, or its sub-command (a dict's entry or an object's method) named by the first argument."""
    target = component
    if args and not args[0].startswith("-"):
        target = component.get(args[0]) if isinstance(component, dict) else getattr(component, args[0], component)
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.annotation in (bool, bool | None, "bool", "bool | None")]


def bool_args(args: list[str], names: Sequence[str]) -> list[str]:
    """``--name false`` / ``--name=No`` for each of ``names`` -> ``--name=False`` (and the same for true); a bare
    ``--name`` stays fire's True. Any other value is a ValueError naming the option."""
    flags = {f"--{n}" for n in names} | {f"--{n.replace('_', '-')}" for n in names}
    out, i = [], 0
    while i < len(args):
        flag, sep, value = args[i].partition("=")
        takes_next = not sep and flag in flags and i + 1 < len(args) and not args[i + 1].startswith("--")
        if flag in flags and (sep or takes_next):
            value = args[i + 1] if takes_next else value
            word = value.strip("'\"").lower()
            if word not in BOOL_WORDS:
                raise ValueError(f"Invalid {flag}. (expected true or false, found {value!r})")
            out.append(f"{flag}={BOOL_WORDS[word]}")
            i += 2 if takes_next else 1
            continue
        out.append(args[i])
        i += 1
    return out
