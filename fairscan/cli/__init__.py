"""The command line: a thin Typer layer over the library.

This module is the only place that turns fairscan's errors into exit codes (0 ok, 1 runtime failure,
2 bad usage or input, 3 audit gate failed). Commands are registered here and live one per module; each
module imports its heavy dependencies inside the command function so that ``fairscan --help`` is fast.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from fairscan import __version__
from fairscan.cli._common import err_console, expand_greedy, state, warn
from fairscan.errors import FairscanError
from fairscan.settings import FairscanWarning

_show_warning = warnings.showwarning


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    """fairscan's own warnings (an old preset key, say) as one ``warning:`` line on stderr, every time."""
    if issubclass(category, FairscanWarning):
        warn(str(message))
    else:
        _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _show
warnings.simplefilter("always", FairscanWarning)


class _ErrorMappingGroup(TyperGroup):
    """Runs a subcommand and maps errors to exit codes, with a traceback only under ``--debug``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = expand_greedy(list(args))
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except FairscanError as exc:
            if state.debug:
                err_console.print_exception(show_locals=False)
            err_console.print(f"[bold red]Error:[/] {exc.message}", highlight=False, soft_wrap=True)
            if exc.hint:
                err_console.print(f"  [dim]hint:[/] {exc.hint}", highlight=False, soft_wrap=True)
            ctx.exit(exc.exit_code)
        except (Exit, TyperException, Abort, BrokenPipeError):
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            ctx.exit(130)
        except Exception as exc:  # a bug or an unexpected library failure: runtime failure
            if state.debug:
                raise
            err_console.print(
                f"[bold red]Error:[/] unexpected {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True
            )
            err_console.print("  [dim]hint:[/] re-run with --debug for the traceback", highlight=False)
            ctx.exit(1)


app = typer.Typer(
    name="fairscan",
    cls=_ErrorMappingGroup,
    help="Fine-tune medical imaging foundation models on chest X-rays and audit their subgroup fairness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fairscan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    state.debug = debug


def _register() -> None:
    from fairscan.cli import audit, demo, embed, ensemble, finetune, models, prepare, presets, pretrain, study
    from fairscan.cli import inspect as inspect_cli
    from fairscan.cli import probe as probe_cli

    app.add_typer(prepare.app, name="prepare", cls=_ErrorMappingGroup)
    app.command("pretrain", no_args_is_help=False)(pretrain.pretrain)
    app.command("finetune")(finetune.finetune)
    app.command("predict", no_args_is_help=True)(finetune.predict)
    app.command("audit", no_args_is_help=True)(audit.audit)
    app.command("ensemble", no_args_is_help=True)(ensemble.ensemble)
    app.command("embed", no_args_is_help=True)(embed.embed)
    app.command("probe", no_args_is_help=True)(probe_cli.probe)
    app.command("inspect", no_args_is_help=True)(inspect_cli.inspect)
    app.command("demo")(demo.demo)
    app.add_typer(models.app, name="models", cls=_ErrorMappingGroup)
    app.add_typer(presets.app, name="presets", cls=_ErrorMappingGroup)
    app.command("study")(study.study)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    try:
        rc = app(args=argv, prog_name="fairscan", standalone_mode=False)
    except Exit as exc:
        return exc.exit_code
    except TyperException as exc:  # usage errors: unknown command or option, bad value
        exc.show()
        return exc.exit_code
    except Abort:
        return 130
    except BrokenPipeError:
        # The reader closed the pipe (`fairscan audit ... --json | head`): stop quietly with 1, as rich does when
        # its own writes meet a closed pipe, and point stdout at /dev/null so that Python's flush at exit
        # cannot raise the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
