"""actionbench command line: thin click commands, each calling one library function.

Run ``python cli.py --help`` for the commands and ``python cli.py COMMAND --help`` for examples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pipelines.backend import DEVICE_CHOICES, DEVICE_ENV_VAR


class Context:
    """What every command may need: the requested device. The backend is resolved lazily, once."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._backend = None

    @property
    def backend(self):  # type: ignore[no-untyped-def]
        if self._backend is None:
            from pipelines.backend import resolve_backend

            try:
                self._backend = resolve_backend(self.device)
            except (ValueError, RuntimeError) as exc:
                raise click.UsageError(str(exc)) from exc
        return self._backend


pass_context = click.make_pass_decorator(Context)


def csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--device",
    type=click.Choice(DEVICE_CHOICES),
    default=None,
    envvar=DEVICE_ENV_VAR,
    show_envvar=True,
    help="Where to run: auto (GPU where usable), cpu, or gpu (fail if none). Default: auto.",
)
@click.pass_context
def main(ctx: click.Context, device: str | None) -> None:
    """Compare classical and deep video action classifiers on identical, leak-free splits.

    \b
    Quick start:
      python cli.py run                 # demo dataset, every model, HTML report
      python cli.py doctor              # what runs where, and why
    """
    ctx.obj = Context(device or "auto")


@main.command()
@pass_context
def doctor(context: Context) -> None:
    """Print library versions, GPU usability and the backend of every stage.

    \b
    Examples:
      python cli.py doctor
      python cli.py --device cpu doctor
    """
    from pipelines.backend import library_versions

    backend = context.backend
    click.echo("Libraries:")
    for name, version in library_versions().items():
        click.echo(f"  {name:<13} {version or 'not installed'}")
    click.echo(f"\nRequested device: {backend.requested}")
    click.echo(f"CUDA GPU usable:  {'yes, ' + str(backend.gpu_name) if backend.cuda.usable else 'no'} ({backend.cuda.reason})")
    click.echo("\nStages:")
    for stage, choice in backend.stages().items():
        click.echo(f"  {stage:<10} {choice.name:<13} [{choice.device}] {choice.reason}")


if __name__ == "__main__":
    sys.exit(main())
