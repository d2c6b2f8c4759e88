"""The ``optimix`` command line: parses, calls, prints. No logic of its own.

Bad input of any kind ends with one line on stderr (``error: model.d_modle: unknown key``)
and exit status 2; never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from optimix import report
from optimix.core.config import SpaceError
from optimix.core.space import load_space

EXIT_BAD_INPUT = 2
EXIT_TRACKING = 3  # MLflow unreachable: finished results are kept for --resume
EXIT_CRASH = 1  # the search itself failed: finished results are kept for --resume
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}  # as a shell reports a process ended by the signal


def _space_options(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override any entry by its dotted key (repeatable).")(fn)
    fn = click.argument("space", type=click.Path(dir_okay=False))(fn)
    return fn


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _not_tune_restore(record: logging.LogRecord) -> bool:
    return "Tuner.restore" not in record.getMessage()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details to stderr.")
@click.version_option(package_name="optimix")
def cli(verbose: bool) -> None:
    """Search rare-task frequency against model size under a FLOPs budget."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        # Start-up notices of the libraries underneath, not news at every run: MLflow creating
        # the tables of a new SQLite store; Ray saying that its in-process instance uses token
        # authentication (it does; the README's security section says so). MLflow 3.9 (the
        # floor) lets alembic's own notices about that store through as well.
        # A filter, not a level: MLflow's and Ray's logging set-up resets their loggers' levels.
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "alembic.runtime.plugins",
                     "ray._private.authentication.authentication_token_setup"):
            logging.getLogger(name).addFilter(_errors_only)
    # Tune's advice after an interruption (``Tuner.restore(...)``) is not how an optimix search
    # is taken up: the CLI prints the ``--resume`` line instead.
    logging.getLogger("ray.tune.tune").addFilter(_not_tune_restore)


@cli.command()
@_space_options
def validate(space: str, overrides: tuple[str, ...]) -> None:
    """Check a search-space file and summarise it."""
    from optimix.core.budget import unbuildable_corners
    from optimix.trial import hub
    from optimix.trial.train import plan_trial

    loaded, _ = hub.pin_space(load_space(space, overrides), None)  # a hub dataset at one commit
    plan = plan_trial(loaded.base)
    click.echo(f"{space}: ok ({loaded.name})")
    rare = list(loaded.base.mixture.rare_specs())
    click.echo(f"  tasks: {', '.join(loaded.base.tasks)}; rare task{'s' if len(rare) > 1 else ''}: {', '.join(rare)}")
    if loaded.dimensions:
        click.echo("  search dimensions:")
        for key, dim in loaded.dimensions.items():
            where = dim.values if dim.dist == "choice" else f"[{dim.low:g}, {dim.high:g}]"
            click.echo(f"    {key}: {dim.dist} {where} (train uses {dim.middle()})")
    click.echo(f"  default trial: {plan.shape.params:,} params, {plan.tokens:,} tokens, "
               f"{plan.train_flops:.3g} FLOPs")
    tried, bad = unbuildable_corners(loaded)
    if bad:
        point, why = bad[0]
        click.echo(f"warning: {len(bad)} of {tried} corners of the space cannot be built (a search records "
                   f"such points as infeasible), e.g. {json.dumps(point)}: {why}", err=True)


@cli.command()
@_space_options
@click.option("--seed", type=int, default=None, help="Seed for data, model and training.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def train(space: str, overrides: tuple[str, ...], seed: int | None, device: str | None,
          as_json: bool) -> None:
    """Train and evaluate one trial at each dimension's default (no Ray, no MLflow)."""
    from optimix.trial import hub
    from optimix.trial.train import resolve_device, run_trial

    extra = list(overrides)
    if seed is not None:
        extra.append(f"seed={seed}")
    if device is not None:
        extra.append(f"train.device={device}")
    config = hub.pin_config(load_space(space, extra, ranges=False).base)  # the one config it trains
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
        from optimix.trial.tasks import scored_on

        report.trial(result, {name: scored_on(spec) for name, spec in config.tasks.items()})
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
    from optimix.records.mlflow_client import TrackingError
    from optimix.search import SearchInterrupted, SearchOptions, run_search

    extra = list(overrides)
    for key, value in (("search.trials", trials), ("search.budget_flops", budget_flops),
                       ("search.max_concurrent", max_concurrent), ("seed", seed)):
        if value is not None:
            extra.append(f"{key}={value}")
    loaded = load_space(space, extra)
    options = SearchOptions(address=address, tracking_uri=tracking_uri, experiment=experiment,
                            storage_path=storage_path, resume=resume, progress=report.progress_printer(),
                            shutdown_ray=True)
    resume_line = _resume_line(space)
    try:
        summary = run_search(loaded, options)
    except TrackingError as err:
        report.end_progress()
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_TRACKING)
    except SearchInterrupted as stop:
        report.end_progress()
        report.interrupted(stop.summary, stop.signal_name, resume_line)
        sys.exit(EXIT_SIGNAL.get(stop.signal_name, 130))
    except SpaceError:
        report.end_progress()
        raise
    except Exception as err:  # a crash of the search itself: say so, keep what finished
        report.end_progress()
        logging.getLogger(__name__).info("search crashed", exc_info=True)
        from optimix.records.mlflow_client import one_line  # no credentials in what is shown

        click.echo(f"error: the search stopped: {one_line(err)} "
                   "(finished trials are kept; -v shows the traceback)", err=True)
        click.echo(resume_line, err=True)
        sys.exit(EXIT_CRASH)
    report.end_progress()
    report.search_summary(summary)
    if summary.trials and not summary.ok and not summary.pruned:  # nothing to show for it
        report.every_trial_failed(summary)
        sys.exit(EXIT_CRASH)


def _confirm(experiment: str, storage_path: str, tracking_uri: str | None, k: int) -> None:
    """``frontier --confirm K``: resume the search (its space from its state) to retrain its
    frontier configs at K fresh seeds (``optimix.search.confirm``)."""
    from optimix.core.space import build_space
    from optimix.search import SearchOptions, SearchState, run_search

    saved = SearchState.latest(Path(storage_path).expanduser().resolve(), experiment).load()
    if saved is None or saved.space is None:
        raise SpaceError(f"--confirm: the search of {experiment!r} under {storage_path} has no saved state")
    options = SearchOptions(tracking_uri=tracking_uri, experiment=experiment, storage_path=storage_path,
                            resume=True, confirm=k, progress=report.progress_printer(), shutdown_ray=True)
    run_search(build_space(saved.space), options)
    report.end_progress()


def _resume_line(space: str) -> str:
    """The command that takes an interrupted search up: this one, with ``--resume``.
    Credentials in a URI show as ``***`` (put them back, or give them to MLflow as
    ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``)."""
    import shlex

    from optimix.records.mlflow_client import redact_uri

    def shown(arg: str) -> str:
        if "://" not in arg:
            return arg
        option, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return f"{option}{eq}{redact_uri(value)}"

    argv = sys.argv[sys.argv.index("search") + 1:] if "search" in sys.argv else [space]
    args = [*argv, *([] if "--resume" in argv else ["--resume"])]
    return "resume with:  optimix search " + " ".join(shlex.quote(shown(a)) for a in args)


@cli.command()
@click.option("--experiment", default=None,
              help="MLflow experiment (default: the last search started from --storage-path).")
@click.option("--tracking-uri", default=None)
@click.option("--run-id", default=None, help="A search's parent run (default: the latest search).")
@click.option("--storage-path", default="optimix_runs", show_default=True,
              help="Without --experiment: the last search started from here.")
@click.option("--json", "as_json", is_flag=True, help="Print the frontier as one JSON list.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the frontier plot (.png or .html).")
@click.option("--register", "register_as", default=None, metavar="NAME",
              help="Register a frontier model in MLflow's model registry as NAME.")
@click.option("--run", "trial_run", default=None, metavar="ID",
              help="With --register: this trial's model (run or trial id; default: the frontier's "
                   "best in the first objective).")
@click.option("--confirm", type=click.IntRange(1, 64), default=None, metavar="K",
              help="Retrain each frontier config at K fresh seeds first, as trials of the same search "
                   "(same parent run; its budget grows by their cost).")
def frontier(experiment: str | None, tracking_uri: str | None, run_id: str | None, storage_path: str,
             as_json: bool, plot_path: str | None, register_as: str | None, trial_run: str | None,
             confirm: int | None) -> None:
    """The Pareto frontier of a recorded search."""
    from optimix.core import frontier as front
    from optimix.plan import plots

    if trial_run is not None and register_as is None:
        raise SpaceError("--run: names the trial whose model --register registers; give --register NAME")
    record = _load_search(tracking_uri, experiment, run_id, storage_path)
    if confirm is not None:
        _confirm(record.experiment, storage_path, tracking_uri, confirm)
        record = _load_search(tracking_uri, record.experiment, record.run_id, storage_path)
    if register_as is not None:
        _register(record, tracking_uri, register_as, trial_run)
        return
    rows = front.recorded_rows(record.trials, record.objectives, record.confirm_at)
    rows.sort(key=lambda r: r.get(plots.axes_for(record.objectives)[0]) or 0)
    if plot_path and not any(t.status == "ok" for t in record.trials):
        raise SpaceError(f"--plot: search {record.run_id} has no finished trial to plot")
    if plot_path:
        x, y = plots.axes_for(record.objectives)
        prows = plots.rows_from_records(record.trials, record.objectives)
        payload = plots.html(prows, x, y) if plot_path.endswith(".html") else plots.png(prows, x, y)
        with open(plot_path, "wb") as f:
            f.write(payload)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    report.frontier(record, rows)
    if plot_path:
        click.echo(f"plot written to {plot_path}")


@cli.command("check")
@click.option("--experiment", default=None, help="The search's experiment (default: the latest search).")
@click.option("--tracking-uri", default=None, help="MLflow store (default: the one the search used).")
@click.option("--storage-path", default="optimix_runs", show_default=True,
              help="Where the search kept its state (as given to optimix search).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def check_command(experiment: str | None, tracking_uri: str | None, storage_path: str,
                  as_json: bool) -> None:
    """Check that a search's ledger, MLflow runs and Optuna journal agree (exit 1 if not)."""
    from optimix.search import check

    record = check.read(storage_path, experiment, tracking_uri)
    violations = check.check(record)
    if as_json:
        click.echo(json.dumps(check.report(record, violations), indent=2))
    else:
        for violation in violations:
            click.echo(violation.line())
        click.echo(check.summary(record, violations))
    if violations:
        sys.exit(1)


@cli.command("plan")
@click.argument("space", required=False, type=click.Path(dir_okay=False))
@click.option("--experiment", default=None,
              help="MLflow experiment (default: the last search started from --storage-path).")
@click.option("--tracking-uri", default=None)
@click.option("--run-id", default=None, help="A search's parent run (default: the latest search).")
@click.option("--storage-path", default="optimix_runs", show_default=True,
              help="Without --experiment: the last search started from here.")
@click.option("--budget-flops", type=float, default=None, help="Best accuracy for this many training FLOPs.")
@click.option("--target-acc", type=float, default=None, help="Cheapest way to reach this accuracy.")
@click.option("--task", default=None, help="Task to plan for (default: the search's rare-task objective).")
@click.option("--params", "size", type=float, default=None,
              help="Answer for a model of this many parameters (the one you will train; may extrapolate).")
@click.option("--hardware", default=None,
              help="Cost profile: h100 (default), a100, cpu, or the name in the space's hardware: section.")
@click.option("--workers", type=int, default=None, help="With SPACE: devices at once (default: search.max_concurrent).")
@click.option("--validate", "validate_fit", is_flag=True, help="Predict recorded trials left out of the fit (by size, by config).")
@click.option("--verify", is_flag=True, help="Train the recommended config and compare with the prediction.")
@click.option("--verify-seeds", type=click.IntRange(1, 64), default=3, show_default=True,
              help="With --verify: fresh seeds to train it at (their mean against the mean's interval).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap (and SPACE sampling).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def plan_command(space: str | None, experiment: str | None, tracking_uri: str | None, run_id: str | None,
                 storage_path: str,
                 budget_flops: float | None, target_acc: float | None, task: str | None,
                 size: float | None, hardware: str | None, workers: int | None, validate_fit: bool, verify: bool,
                 verify_seeds: int, seed: int, as_json: bool) -> None:
    """Answer budget questions from a recorded search, or from SPACE before one."""
    from optimix.core import fit as model
    from optimix.core import hardware as hw
    from optimix.plan import plan as planner
    from optimix.plan import verify as verification

    try:
        if space is not None:
            used = [name for name, on in (("--target-acc", target_acc is not None), ("--task", task),
                                          ("--params", size is not None),
                                          ("--validate", validate_fit), ("--verify", verify),
                                          ("--experiment", experiment), ("--run-id", run_id)) if on]
            if used:
                raise SpaceError(f"{used[0]}: reads recorded trials; SPACE plans before a search (drop one)")
            loaded, section = _plan_space(space)
            from optimix.trial.train import task_geometry

            doc = planner.space_outlook(loaded, hardware=hw.resolve(hardware, section), geometry=task_geometry,
                                        budget_flops=budget_flops, workers=workers, seed=seed)
            _plan_emit(doc, as_json, report.outlook)
            return
        if workers is not None:
            raise SpaceError("--workers: only with SPACE (planning before a search)")
        if budget_flops is None and target_acc is None and not validate_fit:
            raise SpaceError("give --budget-flops F or --target-acc A (or --validate)")
        profile = hw.resolve(hardware)
        record = _load_search(tracking_uri, experiment, run_id, storage_path)
        doc, table = planner.search_table(record, task)
        if budget_flops is not None or target_acc is not None:
            doc.update(planner.answer(table, metric=doc["metric"], budget_flops=budget_flops,
                                      target_acc=target_acc, hardware=profile, params=size, seed=seed,
                                      constraints=planner.search_constraints(record)))
        elif size is not None:
            raise SpaceError("--params: give --budget-flops F or --target-acc A to answer at that size")
        if validate_fit:
            doc["validate"] = planner.cross_validate(table, seed=seed)
        if verify:
            doc["verify"] = verification.verify(doc, table, record.trials, seeds=verify_seeds)
    except (model.PlanError, hw.HardwareError) as err:
        raise SpaceError(str(err)) from None
    _plan_emit(doc, as_json, report.plan)


def _plan_space(path: str):
    """The space (hub datasets at one commit each) and its ``hardware:`` section, if any."""
    from optimix.trial import hub

    loaded, _ = hub.pin_space(load_space(path), None)
    section = loaded.base.hardware
    return loaded, (section.model_dump() if section is not None else None)


def _load_search(tracking_uri, experiment, run_id, storage_path=None):
    """A recorded search (``records.SearchRecord``); MLflow's failures as bad input. Which
    search was taken, when none was named, goes to stderr (``--json`` keeps stdout clean)."""
    from optimix.records.mlflow_client import TrackingError
    from optimix.records.records import load_search

    try:
        record = load_search(tracking_uri, experiment, run_id, storage_path)
    except TrackingError as err:
        raise SpaceError(str(err)) from None
    if record.picked:
        click.echo(f"search {record.run_id} in experiment {record.experiment!r}: {record.picked} "
                   "(name another with --experiment)", err=True)
    return record


def _register(record, tracking_uri: str | None, name: str, trial_run: str | None) -> None:
    """``optimix frontier --register``: one trial's MLflow model as a new registered version."""
    from optimix.records import serving
    from optimix.records.mlflow_client import connect, resolve_uri

    client = connect(resolve_uri(tracking_uri))
    try:
        trial = serving.pick_trial(client, record, trial_run)
    except ValueError as err:
        raise SpaceError(str(err)) from None
    try:
        version = serving.register(client, trial.run_id, name)
    except ValueError as err:
        raise SpaceError(str(err)) from None
    values = ", ".join(f"{o.metric}={trial.metrics[o.metric]:.3g}" for o in record.objectives
                       if o.metric in trial.metrics)
    click.echo(f"registered {name!r} version {version.version}: run {trial.run_id} ({trial.name}; {values})")
    click.echo(f"serve it:  mlflow models serve -m models:/{name}/{version.version} --env-manager local")


def _plan_emit(doc, as_json: bool, printer) -> None:
    from optimix.plan import plan as planner

    if as_json:
        click.echo(json.dumps(planner.jsonable(doc), indent=2))
    else:
        printer(doc)


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
