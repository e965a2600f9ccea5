"""Records which options each `aviary` command the tests run was given (tests/test_cli_surface.py).

conftest.py puts this folder on PYTHONPATH and names a log in CLI_SURFACE_LOG, so that every
`python -m aviarytools ...` a test starts imports this first.  When click's core module is
imported, Command.invoke is wrapped: each subcommand that runs appends one line to the log,
{"command": NAME, "params": [the names of the parameters given on its command line]}.
"""

import os
import sys

LOG = os.environ.get("CLI_SURFACE_LOG")


def _record(command_class) -> None:
    import json

    from click.core import ParameterSource

    invoke = command_class.invoke

    def recorded(self, ctx):
        if ctx.parent is not None:  # a command of the `aviary` group, its arguments parsed
            given = [p.name for p in self.params if ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
            with open(LOG, "a", encoding="utf-8") as log:
                log.write(json.dumps({"command": ctx.info_name, "params": given}) + "\n")
        return invoke(self, ctx)

    command_class.invoke = recorded


class _WhenClickLoads:
    """A finder that steps in once, for click.core, to wrap what it defines."""

    def find_spec(self, name, path=None, target=None):
        if name != "click.core":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_record(module):
            exec_module(module)
            _record(module.Command)

        spec.loader.exec_module = exec_and_record
        return spec


if LOG:
    sys.meta_path.insert(0, _WhenClickLoads())
