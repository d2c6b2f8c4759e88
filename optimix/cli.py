"""The ``optimix`` command line: parses, calls, prints. No logic of its own.

Bad input of any kind ends with one line on stderr (``error: model.d_modle: unknown key``)
and exit status 2; never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
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


@cli.command()
@_space_options
@click.option("--trials", type=int, default=None, help="Most trials to run (search.trials).")
@click.option("--budget-flops", type=float, default=None, help="Total training FLOPs (search.budget_flops).")
@click.option("--max-concurrent", type=int, default=None, help="Trials at a time (search.max_concurrent).")
@click.option("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else local).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
@click.option("--experiment", default=None, help="MLflow experiment (default: the space's name).")
@click.option("--storage-path", default="optimix_runs", show_default=True,
              help="Where the search keeps its state (shared storage on a cluster).")
@click.option("--resume", is_flag=True, help="Continue the latest search of this experiment.")
@click.option("--seed", type=int, default=None, help="Seed for the sampler, data and models.")
def search(space: str, overrides: tuple[str, ...], trials: int | None, budget_flops: float | None,
           max_concurrent: int | None, address: str | None, tracking_uri: str | None,
           experiment: str | None, storage_path: str, resume: bool, seed: int | None) -> None:
    """Search the space with Ray Tune + Optuna; record every trial and the frontier in MLflow."""
    from optimix.search import SearchOptions, run_search
    from optimix.tracking import TrackingError

    extra = list(overrides)
    for key, value in (("search.trials", trials), ("search.budget_flops", budget_flops),
                       ("search.max_concurrent", max_concurrent), ("seed", seed)):
        if value is not None:
            extra.append(f"{key}={value}")
    loaded = load_space(space, extra)
    options = SearchOptions(address=address, tracking_uri=tracking_uri, experiment=experiment,
                            storage_path=storage_path, resume=resume, progress=_progress_printer())
    try:
        summary = run_search(loaded, options)
    except TrackingError as err:
        raise SpaceError(str(err)) from None
    _end_progress()
    _print_summary(summary)


_LAST_LINE = {"width": 0}


def _progress_printer():
    tty = sys.stderr.isatty()

    def show(p) -> None:
        budget = f" of {p.budget_flops:.3g}" if p.budget_flops else ""
        best = f"{p.best:.3f}" if p.best is not None else "-"
        line = (f"trials {p.done}/{p.planned} done, {p.running} running, {p.failed} failed | "
                f"FLOPs {p.spent_flops:.3g}{budget} | frontier {p.frontier} | best {p.best_metric} {best}")
        if tty:
            pad = max(0, _LAST_LINE["width"] - len(line))
            click.echo("\r" + line + " " * pad, err=True, nl=False)
            _LAST_LINE["width"] = len(line)
        else:
            click.echo(line, err=True)

    return show


def _end_progress() -> None:
    if _LAST_LINE["width"] and sys.stderr.isatty():
        click.echo("", err=True)


def _print_summary(summary) -> None:
    budget = f" of {summary.budget_flops:.3g}" if summary.budget_flops else ""
    click.echo(f"search {summary.experiment}: {summary.trials} trials ({summary.ok} ok, "
               f"{summary.failed} failed or infeasible), {summary.spent_flops:.3g}{budget} FLOPs, "
               f"{summary.wall_s:.0f} s")
    click.echo(f"Pareto frontier ({len(summary.frontier)} trials):")
    _print_frontier(summary.frontier, summary.objectives)
    uri = summary.tracking_uri
    click.echo(f"\nMLflow: parent run {summary.parent_run_id} in experiment {summary.experiment!r}")
    click.echo(f"  open the UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
               if not uri.startswith("http") else f"  open the UI:  {uri}")
    click.echo(f"  then http://127.0.0.1:5000 -> {summary.experiment} -> select runs -> Compare")
    state = summary.state_dir
    if state.startswith(os.getcwd() + os.sep):
        state = os.path.relpath(state)
    click.echo(f"  resume:       add --resume (state in {state})")


def _print_frontier(rows, objectives) -> None:
    metrics = [m for m, _ in objectives]
    head = f"{'run':<34}" + "".join(f"{m:>14}" for m in metrics) + f"{'params':>10}  point"
    click.echo(head)
    for r in rows:
        point = " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in r.get("point", {}).items())
        click.echo(f"{r['run_id']:<34}" + "".join(f"{_fmt(r.get(m)):>14}" for m in metrics)
                   + f"{int(r['params']):>10,}  {point}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    return str(value)


@cli.command()
@click.option("--experiment", default=None, help="MLflow experiment (default: the latest one).")
@click.option("--tracking-uri", default=None)
@click.option("--run-id", default=None, help="A search's parent run (default: the latest search).")
@click.option("--json", "as_json", is_flag=True, help="Print the frontier as one JSON list.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the frontier plot (.png or .html).")
def frontier(experiment: str | None, tracking_uri: str | None, run_id: str | None, as_json: bool,
             plot_path: str | None) -> None:
    """The Pareto frontier of a recorded search."""
    from optimix import plots
    from optimix.tracking import TrackingError, load_search

    try:
        record = load_search(tracking_uri, experiment, run_id)
    except TrackingError as err:
        raise SpaceError(str(err)) from None
    objectives = record.objectives
    ok = [t for t in record.trials if t.status == "ok"]
    front = sorted((t for t in ok if t.pareto), key=lambda t: t.metrics.get(plots.axes_for(objectives)[0], 0))
    rows = [{"run_id": t.run_id, "trial_id": t.trial_id, "name": t.name,
             **{m: t.metrics.get(m) for m, _ in objectives}, "params": t.metrics.get("params", 0),
             "point": t.point} for t in front]
    if plot_path and not ok:
        raise SpaceError(f"--plot: search {record.run_id} has no finished trial to plot")
    if plot_path:
        prows = [{**t.metrics, "name": t.name, "pareto": t.pareto, "run_id": t.run_id,
                  "rare_freq": float(t.params.get("mixture.rare_freq", "nan"))} for t in ok]
        x, y = plots.axes_for(objectives)
        payload = plots.html(prows, x, y) if plot_path.endswith(".html") else plots.png(prows, x, y)
        with open(plot_path, "wb") as f:
            f.write(payload)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"experiment {record.experiment}, search {record.run_id}: {len(record.trials)} trials, "
               f"{len(ok)} ok, frontier of {len(rows)} over "
               + ", ".join(f"{m} ({d})" for m, d in objectives))
    _print_frontier(rows, objectives)
    if plot_path:
        click.echo(f"plot written to {plot_path}")


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
