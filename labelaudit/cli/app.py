"""The ``labelaudit`` command: a Typer app whose errors are one ``Error: …`` line and exit code 2.

Ctrl-C in any command prints one line on stderr saying what was kept, and exits with code 130.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ..errors import LabelAuditError
from . import startup


#: files named in full in the line printed on Ctrl-C; more are counted
SHOWN_WRITES = 3


class LabelAuditGroup(TyperGroup):
    """Turns every usage or input error into one line on stderr, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        # Typer turns a KeyboardInterrupt into a silent exit 130 before main() sees it: report it here.
        from ..report.files import record_writes

        with record_writes() as written:
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt:
                typer.echo(interrupted_message(written), err=True)
                raise typer.Exit(130) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except LabelAuditError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as exc:
            if type(exc).__name__ == "Abort":  # click's or typer's: Ctrl-C at a prompt
                _fail("interrupted", 130)
            if hasattr(exc, "format_message"):  # usage errors of typer (and of click, which older typer uses)
                _fail(exc.format_message(), getattr(exc, "exit_code", 2) or 2)
            if os.environ.get("LABELAUDIT_DEBUG"):  # a bug, not bad input: still one line unless debugging
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set LABELAUDIT_DEBUG=1 for details)")
        sys.exit(result if isinstance(result, int) else 0)


def interrupted_message(written: list[Any]) -> str:
    """The one line shown on Ctrl-C: nothing written, or which files were complete before it."""
    if not written:
        return "Interrupted; nothing was written"
    unique = list(dict.fromkeys(str(path) for path in written))
    shown = ", ".join(unique[:SHOWN_WRITES]) + (f" and {len(unique) - SHOWN_WRITES} more"
                                                if len(unique) > SHOWN_WRITES else "")
    return f"Interrupted; kept {len(unique)} complete file{'s' if len(unique) != 1 else ''} written before it: {shown}"


def _fail(message: str, code: int = 2) -> None:
    first_line = " ".join(str(message).split()) or "unknown error"
    typer.echo(f"Error: {first_line}", err=True)
    sys.exit(code)


app = typer.Typer(
    cls=LabelAuditGroup,
    name="labelaudit",
    help="Find likely label errors in an image folder + label CSV, and gate new annotation batches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"labelaudit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Find likely label errors in an image folder + label CSV, and gate new annotation batches."""


def _register_commands() -> None:
    from . import scan  # noqa: F401  (each module adds its command to ``app``)
    from . import report  # noqa: F401
    from . import export  # noqa: F401
    from . import train  # noqa: F401
    from . import check  # noqa: F401
    from . import matrix  # noqa: F401


_register_commands()


def main() -> None:
    startup.pause_collection()
    app()
