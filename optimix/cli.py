"""The ``optimix`` command line: parses, calls, prints. No logic of its own.

Bad input of any kind ends with one line on stderr (``error: model.d_modle: unknown key``)
and exit status 2; never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from optimix.space import SpaceError, load_space

EXIT_BAD_INPUT = 2


def _space_options(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override any entry by its dotted key (repeatable).")(fn)
    fn = click.argument("space", type=click.Path(dir_okay=False))(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
@click.version_option(package_name="optimix")
def cli(verbose: bool) -> None:
    """Search rare-task frequency against model size under a FLOPs budget."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@_space_options
def validate(space: str, overrides: tuple[str, ...]) -> None:
    """Check a search-space file and summarise it."""
    from optimix.train import plan_trial

    loaded = load_space(space, overrides)
    plan = plan_trial(loaded.base)
    click.echo(f"{space}: ok ({loaded.name})")
    click.echo(f"  tasks: {', '.join(loaded.base.tasks)}; rare task: {loaded.base.mixture.rare_task}")
    if loaded.dimensions:
        click.echo("  search dimensions:")
        for key, dim in loaded.dimensions.items():
            where = dim.values if dim.dist == "choice" else f"[{dim.low:g}, {dim.high:g}]"
            click.echo(f"    {key}: {dim.dist} {where} (train uses {dim.middle()})")
    click.echo(f"  default trial: {plan.shape.params:,} params, {plan.tokens:,} tokens, "
               f"{plan.train_flops:.3g} FLOPs")


@cli.command()
@_space_options
@click.option("--seed", type=int, default=None, help="Seed for data, model and training.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def train(space: str, overrides: tuple[str, ...], seed: int | None, device: str | None,
          as_json: bool) -> None:
    """Train and evaluate one trial at each dimension's default (no Ray, no MLflow)."""
    from optimix.train import resolve_device, run_trial

    extra = list(overrides)
    if seed is not None:
        extra.append(f"seed={seed}")
    if device is not None:
        extra.append(f"train.device={device}")
    config = load_space(space, extra).base
    try:
        resolve_device(config.train.device)
    except ValueError as err:
        raise SpaceError(str(err)) from None
    result = run_trial(config)
    if as_json:
        doc = result.to_dict()
        doc["config"] = config.model_dump(mode="json")
        click.echo(json.dumps(doc, indent=2))
    else:
        _print_trial(result)
    if result.status == "failed":
        sys.exit(1)


def _print_trial(result) -> None:
    shape = result.shape
    click.echo(f"status      {result.status}" + (f"  ({result.error})" if result.error else ""))
    click.echo(f"model       {result.params:,} params ({result.non_embedding_params:,} non-embedding), "
               f"d_model={shape['d_model']} n_layer={shape['n_layer']} n_head={shape['n_head']}")
    click.echo(f"trained     {result.tokens:,} tokens, {result.steps:,} steps, "
               f"{result.train_flops:.3g} FLOPs on {result.device}")
    click.echo(f"time        {result.wall_s:.1f} s ({result.train_s:.1f} s training, "
               f"{result.tokens_per_s:,.0f} tokens/s)")
    if result.accuracy:
        click.echo(f"{'task':<12}{'accuracy':>10}{'loss':>10}")
        for name, acc in result.accuracy.items():
            click.echo(f"{name:<12}{acc:>10.3f}{result.loss[name]:>10.3f}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors for bad input, exit status 2."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except SpaceError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        click.echo(f"error: {err.format_message()}", err=True)
        sys.exit(err.exit_code if err.exit_code else EXIT_BAD_INPUT)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
