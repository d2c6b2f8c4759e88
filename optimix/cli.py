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
        # authentication (it does; the README's security section says so).
        # A filter, not a level: MLflow's and Ray's logging set-up resets their loggers' levels.
        for name in ("mlflow.store.db.utils", "ray._private.authentication.authentication_token_setup"):
            logging.getLogger(name).addFilter(_errors_only)
    # Tune's advice after an interruption (``Tuner.restore(...)``) is not how an optimix search
    # is taken up: the CLI prints the ``--resume`` line instead.
    logging.getLogger("ray.tune.tune").addFilter(_not_tune_restore)


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
    from optimix.search import SearchInterrupted, SearchOptions, run_search
    from optimix.tracking import TrackingError

    extra = list(overrides)
    for key, value in (("search.trials", trials), ("search.budget_flops", budget_flops),
                       ("search.max_concurrent", max_concurrent), ("seed", seed)):
        if value is not None:
            extra.append(f"{key}={value}")
    loaded = load_space(space, extra)
    options = SearchOptions(address=address, tracking_uri=tracking_uri, experiment=experiment,
                            storage_path=storage_path, resume=resume, progress=_progress_printer())
    resume_line = _resume_line(space)
    try:
        summary = run_search(loaded, options)
    except TrackingError as err:
        _end_progress()
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_TRACKING)
    except SearchInterrupted as stop:
        _end_progress()
        s = stop.summary
        click.echo(f"search {s.experiment}: interrupted by {stop.signal_name} after {s.trials} finished "
                   f"trials ({s.spent_flops:.3g} FLOPs); they are kept in {s.state_dir}", err=True)
        click.echo(resume_line, err=True)
        sys.exit(EXIT_SIGNAL.get(stop.signal_name, 130))
    except SpaceError:
        _end_progress()
        raise
    except Exception as err:  # a crash of the search itself: say so, keep what finished
        _end_progress()
        logging.getLogger(__name__).info("search crashed", exc_info=True)
        text = str(err).strip().splitlines()
        click.echo(f"error: the search stopped: {type(err).__name__}: {text[0] if text else ''} "
                   "(finished trials are kept; -v shows the traceback)", err=True)
        click.echo(resume_line, err=True)
        sys.exit(EXIT_CRASH)
    _end_progress()
    _print_summary(summary)


def _resume_line(space: str) -> str:
    """The command that takes an interrupted search up: this one, with ``--resume``."""
    import shlex

    argv = sys.argv[sys.argv.index("search") + 1:] if "search" in sys.argv else [space]
    args = [*argv, *([] if "--resume" in argv else ["--resume"])]
    return "resume with:  optimix search " + " ".join(shlex.quote(a) for a in args)


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
    pruned = f", {summary.pruned} pruned" if summary.pruned else ""
    lost = (f" (+{summary.interrupted_flops:.3g} in interrupted attempts)"
            if summary.interrupted_flops else "")
    click.echo(f"search {summary.experiment}: {summary.trials} trials ({summary.ok} ok{pruned}, "
               f"{summary.failed} failed or infeasible), {summary.spent_flops:.3g}{budget} FLOPs{lost}, "
               f"{summary.wall_s:.0f} s")
    n_curve = sum(not r.get("final", True) for r in summary.frontier)
    n_final = len(summary.frontier) - n_curve
    click.echo(f"Pareto frontier ({n_final} final result{'s' * (n_final != 1)}, "
               f"{n_curve} learning-curve point{'s' * (n_curve != 1)}):")
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
    head = f"{'run':<34}{'at':>11}" + "".join(f"{m:>14}" for m in metrics) + f"{'params':>10}  point"
    click.echo(head)
    for r in rows:
        point = " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in r.get("point", {}).items())
        at = "final" if r.get("final", True) else f"step {r['step']}"
        click.echo(f"{r['run_id']:<34}{at:>11}" + "".join(f"{_fmt(r.get(m)):>14}" for m in metrics)
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
    rows = [{"run_id": t.run_id, "trial_id": t.trial_id, "name": t.name, "final": True,
             **{m: t.metrics.get(m) for m, _ in objectives}, "params": t.metrics.get("params", 0),
             "point": t.point} for t in ok if t.pareto]
    rows += [{"run_id": t.run_id, "trial_id": t.trial_id, "name": t.name, "final": False, "step": step,
              **{m: t.curve.get(step, {}).get(m) for m, _ in objectives},
              "params": t.metrics.get("params", 0), "point": t.point}
             for t in record.trials for step in t.pareto_steps]
    rows.sort(key=lambda r: r.get(plots.axes_for(objectives)[0]) or 0)
    if plot_path and not ok:
        raise SpaceError(f"--plot: search {record.run_id} has no finished trial to plot")
    if plot_path:
        prows = [{**t.metrics, "name": t.name, "pareto": t.pareto, "run_id": t.run_id, "curve": False,
                  "rare_freq": float(t.params.get("mixture.rare_freq", "nan"))} for t in ok]
        prows += [{**t.curve.get(step, {}), "name": f"{t.name} @ step {step}", "pareto": True,
                   "run_id": t.run_id, "curve": True,
                   "rare_freq": float(t.params.get("mixture.rare_freq", "nan"))}
                  for t in record.trials for step in t.pareto_steps]
        x, y = plots.axes_for(objectives)
        payload = plots.html(prows, x, y) if plot_path.endswith(".html") else plots.png(prows, x, y)
        with open(plot_path, "wb") as f:
            f.write(payload)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"experiment {record.experiment}, search {record.run_id}: {len(record.trials)} trials, "
               f"{len(ok)} ok, frontier of {len(rows)} ({sum(not r['final'] for r in rows)} "
               "learning-curve points) over "
               + ", ".join(f"{m} ({d})" for m, d in objectives))
    _print_frontier(rows, objectives)
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
@click.option("--experiment", default=None, help="MLflow experiment (default: the latest one).")
@click.option("--tracking-uri", default=None)
@click.option("--run-id", default=None, help="A search's parent run (default: the latest search).")
@click.option("--budget-flops", type=float, default=None, help="Best accuracy for this many training FLOPs.")
@click.option("--target-acc", type=float, default=None, help="Cheapest way to reach this accuracy.")
@click.option("--task", default=None, help="Task to plan for (default: the search's rare-task objective).")
@click.option("--hardware", default=None,
              help="Cost profile: h100 (default), a100, cpu, or the name in the space's hardware: section.")
@click.option("--workers", type=int, default=None, help="With SPACE: devices at once (default: search.max_concurrent).")
@click.option("--validate", "validate_fit", is_flag=True, help="Held-out predictions of the recorded trials.")
@click.option("--verify", is_flag=True, help="Train the recommended config and compare with the prediction.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap (and SPACE sampling).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document and nothing else.")
def plan_command(space: str | None, experiment: str | None, tracking_uri: str | None, run_id: str | None,
                 budget_flops: float | None, target_acc: float | None, task: str | None,
                 hardware: str | None, workers: int | None, validate_fit: bool, verify: bool,
                 seed: int, as_json: bool) -> None:
    """Answer budget questions from a recorded search, or from SPACE before one."""
    from optimix import hardware as hw
    from optimix import plan as planner

    try:
        if space is not None:
            used = [name for name, on in (("--target-acc", target_acc is not None), ("--task", task),
                                          ("--validate", validate_fit), ("--verify", verify),
                                          ("--experiment", experiment), ("--run-id", run_id)) if on]
            if used:
                raise SpaceError(f"{used[0]}: reads recorded trials; SPACE plans before a search (drop one)")
            loaded, section = _plan_space(space)
            doc = planner.space_outlook(loaded, hardware=hw.resolve(hardware, section),
                                        budget_flops=budget_flops, workers=workers, seed=seed)
            _plan_emit(doc, as_json, _print_outlook)
            return
        if workers is not None:
            raise SpaceError("--workers: only with SPACE (planning before a search)")
        if budget_flops is None and target_acc is None and not validate_fit:
            raise SpaceError("give --budget-flops F or --target-acc A (or --validate)")
        profile = hw.resolve(hardware)
        doc, table, record = _plan_recorded(tracking_uri, experiment, run_id, task)
        if budget_flops is not None or target_acc is not None:
            doc.update(planner.answer(table, metric=doc["metric"], budget_flops=budget_flops,
                                      target_acc=target_acc, hardware=profile, seed=seed))
        if validate_fit:
            doc["validate"] = planner.cross_validate(table, seed=seed)
        if verify:
            doc["verify"] = _plan_verify(doc, table, record)
    except (planner.PlanError, hw.HardwareError) as err:
        raise SpaceError(str(err)) from None
    _plan_emit(doc, as_json, _print_plan)


def _plan_space(path: str):
    """The space and its ``hardware:`` section, if any."""
    loaded = load_space(path)
    section = loaded.base.hardware
    return loaded, (section.model_dump() if section is not None else None)


def _plan_recorded(tracking_uri, experiment, run_id, task):
    from optimix import plan as planner
    from optimix.tracking import TrackingError, load_search

    try:
        record = load_search(tracking_uri, experiment, run_id)
    except TrackingError as err:
        raise SpaceError(str(err)) from None
    if not record.objectives:
        raise SpaceError(f"search {record.run_id} in {record.experiment!r} has no objectives recorded")
    if not record.trials:
        raise SpaceError(f"search {record.run_id} in {record.experiment!r} has no trial")
    metric = planner.choose_metric(
        record.objectives, [t.params.get("mixture.rare_task", "") for t in record.trials],
        {m for t in record.trials for m in t.metrics}, task)
    table = planner.TrialTable.from_records(record.trials, metric)
    if not len(table.usable()):
        raise SpaceError(f"search {record.run_id} in {record.experiment!r} has no finished trial with {metric}")
    doc = {"experiment": record.experiment, "search_run_id": record.run_id,
           "task": metric.removeprefix("acc/"), "metric": metric}
    return doc, table, record


def _plan_verify(doc, table, record) -> dict:
    """Train the recommended config with the trial runner; predicted against achieved."""
    from optimix import plan as planner
    from optimix.space import build_space
    from optimix.train import plan_trial, run_trial

    predicted = doc.get("predicted")
    if not predicted:
        raise SpaceError("--verify: there is no predicted config to train "
                         + (f"({doc['predicted_error']})" if doc.get("predicted_error") else
                            "(give --budget-flops or --target-acc)"))
    config = planner.Config(**{k: float(v) for k, v in predicted["config"].items()})
    row = planner.nearest_size(table, config.params)
    base = record.trials[row]
    recorded = float(table.params[row])
    trial = build_space(planner.verify_tree(base.params, config, recorded)).base
    built = plan_trial(trial).shape.params
    if planner.same_size(config.params, recorded) and built != round(recorded):
        raise SpaceError(f"--verify: run {base.run_id}'s recorded config builds {built:,} params, "
                         f"the run recorded {recorded:,.0f} (its data or code changed since)")
    result = run_trial(trial)
    achieved = result.accuracy.get(doc["task"]) if result.status == "ok" else None
    lo, hi = predicted["interval"] or (None, None)
    return {"status": result.status, "error": result.error, "shape_from": base.run_id,
            "params": result.params, "tokens": result.tokens, "train_flops": result.train_flops,
            "predicted": predicted[doc["metric"]], "interval": predicted["interval"],
            "achieved": achieved, "wall_s": result.wall_s,
            "within_interval": None if achieved is None or lo is None else bool(lo <= achieved <= hi)}


def _plan_emit(doc, as_json: bool, printer) -> None:
    from optimix import plan as planner

    if as_json:
        click.echo(json.dumps(planner.jsonable(doc), indent=2))
    else:
        printer(doc)


def _print_plan(doc) -> None:
    metric = doc["metric"]
    click.echo(f"experiment {doc['experiment']}, search {doc['search_run_id']}: planning {metric}")
    query = doc.get("query")
    if query is not None:
        what = (f"best {metric} for {query['budget_flops']:.3g} FLOPs" if "budget_flops" in query
                else f"cheapest way to {metric} >= {query['target_acc']:g}")
        click.echo(f"query       {what} ({doc['trials']['ok']} of {doc['trials']['recorded']} trials finished)")
        obs = doc["observed"]
        click.echo("observed    " + ("no recorded trial answers it" if obs is None else
                   f"{obs[metric]:.3f} by run {obs['run_id']} ({_plan_config(obs['config'])}; "
                   f"{obs['train_flops']:.3g} FLOPs)"))
        pred = doc["predicted"]
        if pred is None:
            click.echo(f"predicted   none: {doc.get('predicted_error')}")
        else:
            band = "[{:.3f}, {:.3f}]".format(*pred["interval"]) if pred["interval"] else ""
            reach = f", reaches it in {pred['p_reach']:.0%} of refits" if "p_reach" in pred else ""
            click.echo(f"predicted   {pred[metric]:.3f} {band} with {_plan_config(pred['config'])} "
                       f"({pred['train_flops']:.3g} FLOPs{reach})")
            if pred["extrapolated"]:
                click.echo(f"            extrapolated: {'; '.join(pred['outside'])}")
        fit = doc.get("fit")
        if fit and fit.get("threshold_freq") is not None:
            law = f"f_thres = {fit['c']:.3g}"
            for key, var in (("s", "N"), ("u", "T")):
                if fit[key] is not None:
                    lo, hi = fit[f"{key}_interval"]
                    law += f" * {var}^-{fit[key]:.3g} ({key} in [{lo:.3g}, {hi:.3g}])"
            lo, hi = fit["threshold_interval"]
            click.echo(f"threshold   {law}; at {fit['at']['params']:,.0f} params, "
                       f"{fit['at']['tokens']:,.0f} tokens: {fit['threshold_freq']:.3g} [{lo:.3g}, {hi:.3g}]")
        cmp_ = doc.get("frequency_vs_size")
        if cmp_:
            f2, n2 = cmp_["double_frequency"], cmp_["double_params"]
            verdict = "raise the frequency" if cmp_["winner"] == "frequency" else "grow the model"
            agree = cmp_["p_frequency_wins"] if cmp_["winner"] == "frequency" else 1 - cmp_["p_frequency_wins"]
            click.echo(f"freq/size   doubling rare_freq {f2['acc_gain']:+.3f}, doubling params at equal FLOPs "
                       f"{n2['acc_gain']:+.3f}: {verdict} ({agree:.0%} of refits agree)")
        for note in [*(fit or {}).get("notes", []), *(cmp_ or {}).get("notes", [])]:
            click.echo(f"            note: {note}")
        hwp = doc["hardware"]
        if doc.get("gpu_hours") is not None:
            click.echo(f"cost        {doc['gpu_hours']:.3g} device-hours, ${doc['cost_usd']:.3g} on {hwp['name']} "
                       f"({hwp['peak_flops_per_s']:.3g} FLOP/s peak x {hwp['mfu']:g} MFU, ${hwp['usd_per_hour']:g}/h)")
    val = doc.get("validate")
    if val:
        goal = val["goal"]
        click.echo(f"validate    {val['method']} over {val['trials']} trials: Spearman {val['spearman']:.3f} "
                   f"(goal >= {goal['spearman']}), MAE {val['mae']:.3f} (goal <= {goal['mae']}): "
                   + ("meets the goal" if val["meets_goal"] else "misses the goal"))
    ver = doc.get("verify")
    if ver:
        got = "-" if ver["achieved"] is None else f"{ver['achieved']:.3f}"
        click.echo(f"verify      trained {ver['params']:,} params on {ver['tokens']:,} tokens ({ver['status']}): "
                   f"achieved {got}, predicted {ver['predicted']:.3f}"
                   + ("" if ver["within_interval"] is None else
                      (" (inside its interval)" if ver["within_interval"] else " (outside its interval)")))


def _plan_config(config) -> str:
    return (f"params {config['params']:,.0f}, rare_freq {config['rare_freq']:.3g}, "
            f"tokens {config['tokens']:,.0f}")


def _print_outlook(doc) -> None:
    flops, hwp = doc["trial_flops"], doc["hardware"]
    click.echo(f"space {doc['space']}: {len(doc['dimensions'])} search dimensions, at most "
               f"{doc['trials_cap']} trials, workers: {doc['workers']}")
    click.echo(f"trial FLOPs  cheapest {flops['cheapest']:.3g}, mean {flops['mean']:.3g} "
               f"(over {flops['samples']} drawn points), dearest {flops['dearest']:.3g}")
    budget = doc["budget_flops"]
    click.echo("budget       " + (f"{budget:.3g} FLOPs" if budget is not None else
                                  "none: every trial of search.trials runs"))
    click.echo(f"hardware     {hwp['name']}: {hwp['peak_flops_per_s']:.3g} FLOP/s peak x {hwp['mfu']:g} MFU, "
               f"${hwp['usd_per_hour']:g} per device-hour ({hwp['source']})")
    for case in ("expected", "worst"):
        c = doc[case]
        click.echo(f"{case:<12} {c['trials']} trials, {c['train_flops']:.3g} FLOPs, "
                   f"{_plan_hours(c['wall_hours'])} wall, "
                   f"{c['device_hours']:.3g} device-hours, ${c['cost_usd']:.3g}")
    click.echo(f"note         {doc['note']}")


def _plan_hours(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.3g} s"
    return f"{hours * 60:.3g} min" if hours < 1 else f"{hours:.3g} h"


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
