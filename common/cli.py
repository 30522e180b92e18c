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

import ast
import copy
import errno
import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Sequence

DEBUG_ENV = "AACTK_DEBUG"
HELP_FROM_SOURCE_ENV = "AACTK_HELP_FROM_SOURCE"  # "0": --help imports the command as any run does


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
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:  # the message names the device
        from common.io import device_of
        where = err.filename or "."
        said = err.strerror if err.strerror != os.strerror(errno.ENOSPC) else f"No space left on {device_of(where)}"
        return f"{where}: {said}"
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


# --- --help before the imports ----------------------------------------------------------------------------------

def help_from_source(module: str, path: str) -> None:
    """Answer ``python -m <command> --help`` from the command's source file, then exit; anything else returns.

    Called at the top of a command module, before its imports: torch alone takes longer to import than a person
    should wait for help. The ``if __name__ == "__main__":`` block's call names the entry, ``run(function | {name:
    function}, "command", ...)`` or ``command_line(train, DEFAULTS, __doc__, "command")``; fire renders the help of a
    stand-in with the entry's signature (defaults as written) and docstring, the trainers print their settings, as
    the command itself would.
    """
    args = sys.argv[1:]
    if module != "__main__" or not {"-h", "--help"} & set(args) or os.environ.get(HELP_FROM_SOURCE_ENV) == "0":
        return
    constants = _constants_of(Path(path))
    tree, defs = constants.tree, constants.definitions
    calls = [node for node in ast.walk(_main_block(tree)) if isinstance(node, ast.Call)]
    for call in list(calls):  # an entry like main() that calls run() itself
        if isinstance(call.func, ast.Name) and call.func.id in defs:
            calls += [node for node in ast.walk(defs[call.func.id]) if isinstance(node, ast.Call)]
    calls = [c for c in calls if isinstance(c.func, ast.Name) and c.func.id in ("run", "command_line")]
    # several entries (features.extract and features.extract merge): the one whose sub-command is typed
    named = {ast.literal_eval(c.args[-1] if c.func.id == "run" and len(c.args) > 1 else c.args[3]): c for c in calls}
    command = next((n for n in named if len(n.split()) > 1 and n.split()[-1] in args[:1]), min(named, key=len))
    call = named[command]
    if len(command.split()) > 1:
        args = args[1:]
    if call.func.id == "command_line":
        from common.config import dump_config

        print(ast.get_docstring(tree, clean=False) + "\nSettings (defaults; override any with --section.key value):\n\n"
              + dump_config(constants[call.args[1].id]))
    else:
        entry = call.args[0]
        if isinstance(entry, ast.Dict):  # sub-commands by name
            component = {ast.literal_eval(k): _stand_in(constants.definition(v.id), constants)
                         for k, v in zip(entry.keys, entry.values)}
        elif isinstance(entry, ast.Call):  # an object whose methods are the sub-commands
            node = constants.definition(entry.func.id)
            methods = {m.name: _stand_in(m, constants) for m in node.body
                       if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")}
            component = type(node.name, (), {"__doc__": ast.get_docstring(node), **methods})()
        else:
            component = _stand_in(constants.definition(entry.id), constants)
        text_args = next((ast.literal_eval(k.value) for k in call.keywords if k.arg == "text_args"), ())
        run(component, command, text_args=text_args, argv=args)
    sys.exit(0)


def _main_block(tree) -> Any:
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return node
    raise ValueError("no `if __name__ == '__main__':` block")


class _Source:
    """A default value that is not a literal, shown as written."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Constants(dict):
    """Module-level constants of a source file, and those it imports from the project's modules, evaluated from
    their source (never imported): what a default or a trainer's DEFAULTS is made of."""

    def __init__(self, tree, path: Path) -> None:
        super().__init__()
        self.tree, self.path = tree, path
        self.postponed = any(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in tree.body)
        self.imported = {alias.asname or alias.name: (node.module, alias.name, node.level) for node in tree.body
                         if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}
        self.definitions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        for node in tree.body:  # f.__doc__ = g.__doc__
            if (isinstance(node, ast.Assign) and ast.unparse(node.targets[0]).endswith(".__doc__")
                    and ast.unparse(node.value).endswith(".__doc__")):
                self.definitions[ast.unparse(node.targets[0])] = self.definition(node.value.value.id)

    def definition(self, name: str) -> Any:
        """The definition of the function or class ``name`` here or in the module it is imported from; for a
        ``@functools.wraps(f)`` function, f's (its signature and docstring are f's); its docstring replaced where
        the module sets ``name.__doc__``."""
        if name not in self.definitions:
            module, original, level = self.imported[name]
            return _constants_of(_module_file(module, self.path, level)).definition(original)
        node = self.definitions[name]
        for decorator in getattr(node, "decorator_list", []):
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("wraps"):
                return self.definition(decorator.args[0].id)
        if f"{name}.__doc__" in self.definitions:
            doc = ast.get_docstring(self.definitions[f"{name}.__doc__"], clean=False)
            node = copy.copy(node)
            node.body = [ast.Expr(ast.Constant(doc)), *node.body]
        return node

    def __missing__(self, name: str) -> Any:
        for node in self.tree.body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else [])
            if any(getattr(t, "id", None) == name for t in targets):
                self[name] = self.evaluate(node.value)
                return self[name]
        for node in self.tree.body:  # a class: its constants, as attributes (dataclass defaults, ...)
            if isinstance(node, ast.ClassDef) and node.name == name:
                values = {}
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and item.value is not None:
                        values[item.target.id] = self.evaluate(item.value)
                self[name] = type(name, (), values)
                return self[name]
        if name in self.imported:
            module, original, level = self.imported[name]
            submodule = _module_file(f"{module}.{original}", self.path, level)
            if submodule is not None:  # from package import module: its constants as attributes
                constants = _constants_of(submodule)
                self[name] = type(name, (), {"__getattr__": lambda _, attr: constants[attr]})()
                return self[name]
            source = _module_file(module, self.path, level)
            if source is not None:
                self[name] = _constants_of(source)[original]
                return self[name]
        raise KeyError(name)

    def evaluate(self, node) -> Any:
        return eval(compile(ast.Expression(node), str(self.path), "eval"), {"__builtins__": {"dict": dict}}, self)


@functools.lru_cache(maxsize=None)
def _constants_of(path: Path) -> _Constants:
    """The constants of the source file ``path``, parsed once however many names are looked up in it."""
    return _Constants(ast.parse(path.read_text(encoding="utf-8")), path)


def _module_file(module: str, importer: Path, level: int) -> Path | None:
    """The source file of a project module, found without importing it (nor its package)."""
    base = importer.parents[level - 1] if level else Path(__file__).resolve().parents[1]
    for candidate in (base / (module.replace(".", "/") + ".py"), base / module.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _stand_in(node, constants: _Constants) -> Any:
    """A function with ``node``'s signature (defaults evaluated from the source where they can be, else shown as
    written), annotations and docstring, for fire's help."""
    def default(expr) -> Any:
        try:
            return constants.evaluate(expr)
        except Exception:  # noqa: BLE001 - anything not a constant of the source is shown as written
            return _Source(ast.unparse(expr))

    def annotation(expr) -> Any:
        if expr is None:
            return inspect.Parameter.empty
        if constants.postponed:  # from __future__ import annotations: text, as the function itself would hold it
            return ast.unparse(expr)
        try:
            return eval(compile(ast.Expression(expr), "<annotation>", "eval"), {})  # builtins: str, int, ...
        except Exception:  # noqa: BLE001 - a type of another module: shown as written
            return ast.unparse(expr)

    kinds = [(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in node.args.args]
    defaults = [None] * (len(kinds) - len(node.args.defaults)) + list(node.args.defaults)
    if node.args.vararg is not None:
        kinds.append((node.args.vararg, inspect.Parameter.VAR_POSITIONAL))
        defaults.append(None)
    kinds += [(a, inspect.Parameter.KEYWORD_ONLY) for a in node.args.kwonlyargs]
    defaults += list(node.args.kw_defaults)
    if node.args.kwarg is not None:
        kinds.append((node.args.kwarg, inspect.Parameter.VAR_KEYWORD))
        defaults.append(None)
    parameters = [inspect.Parameter(arg.arg, kind, default=inspect.Parameter.empty if expr is None else default(expr),
                                    annotation=annotation(arg.annotation)) for (arg, kind), expr in zip(kinds, defaults)]

    def stand_in(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("help only")

    stand_in.__name__ = stand_in.__qualname__ = node.name
    stand_in.__doc__ = ast.get_docstring(node)
    stand_in.__signature__ = inspect.Signature(parameters)
    return stand_in
