"""The one way a command starts: ``fire`` over a function, errors as one line, text arguments kept as text.

Every ``python -m <package>.<command>`` ends in :func:`run`:

- a failure prints one line, ``<command>: error: <what, naming the file and the reason>``, on stderr and exits
  with status 1; the traceback only with ``--debug`` (or ``AACTK_DEBUG=1`` in the environment);
- Ctrl-C exits with status 130 and one line;
- arguments named in ``text_args`` reach the function as the exact text typed: fire would otherwise read
  ``None``, ``42`` or ``[1,2]`` as Python values (and a very long word can exhaust its parser's memory).
"""
from __future__ import annotations

import errno
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
