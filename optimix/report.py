"""What the ``optimix`` command prints on the terminal: the search's progress line and
summary, frontier tables, planning answers, space outlooks and single trials.

Each printer takes the document or record a command got (a ``--json`` document is the same
document as JSON) and writes lines with ``click.echo``; none computes anything of its own
(the frontier's regime line is ``optimix.plan.plan_table.trial_regime``'s).
"""

from __future__ import annotations

import os
import sys

import click

_LAST_LINE = {"width": 0}  # of the progress line on a terminal: a shorter one pads it out


def progress_printer():
    """The search's progress line on stderr: rewritten in place on a terminal, else one line an update."""
    tty = sys.stderr.isatty()

    def show(p) -> None:
        budget = f" of {p.budget_flops:.3g}" if p.budget_flops else ""
        best = f"{p.best:.3f}" if p.best is not None else "-"
        line = (f"trials {p.done}/{p.planned} done, {p.running} running, {p.failed} failed | "
                f"FLOPs {p.spent_flops:.3g}{budget} | frontier {p.frontier}{_moved(p)} | "
                f"best {p.best_metric} {best}")
        if tty:
            pad = max(0, _LAST_LINE["width"] - len(line))
            click.echo("\r" + line + " " * pad, err=True, nl=False)
            _LAST_LINE["width"] = len(line)
        else:
            click.echo(line, err=True)

    return show


def _moved(p) -> str:
    """How long ago the frontier last moved, and the patience it is measured against."""
    if p.since_moved is None:
        return ""
    ago = ("by the last trial" if p.since_moved == 0 else
           f"{p.since_moved} trial{'s' * (p.since_moved != 1)} ago")
    return f", last moved {ago}" + (f" (patience {p.patience})" if p.patience is not None else "")


def end_progress() -> None:
    """Ends the progress line on a terminal, so that what follows starts on a line of its own."""
    if _LAST_LINE["width"] and sys.stderr.isatty():
        click.echo("", err=True)


def search_summary(summary) -> None:
    """The end of ``optimix search``: counts, the frontier, where MLflow and the state are."""
    budget = f" of {summary.budget_flops:.3g}" if summary.budget_flops else ""
    pruned = f", {summary.pruned} pruned" if summary.pruned else ""
    lost = (f" (+{summary.interrupted_flops:.3g} in interrupted attempts)"
            if summary.interrupted_flops else "")
    again = f"; {summary.replicates} retrained a frontier config at a new seed" if summary.replicates else ""
    click.echo(f"search {summary.experiment}: {summary.trials} trials ({summary.ok} ok{pruned}, "
               f"{summary.failed} failed or infeasible{again}), {summary.spent_flops:.3g}{budget} FLOPs{lost}, "
               f"{summary.wall_s:.0f} s")
    if summary.stalled is not None:
        click.echo(f"stopped early: the frontier did not move in the last {summary.stalled} trials "
                   f"(search.patience: {summary.patience})"
                   + ("; a trial that was still running then moved it" if summary.moved_since_stalled else ""))
    n_curve = sum(not r.get("final", True) for r in summary.frontier)
    n_final = len(summary.frontier) - n_curve
    click.echo(f"Pareto frontier ({n_final} final result{'s' * (n_final != 1)}, "
               f"{n_curve} learning-curve point{'s' * (n_curve != 1)}{_tied_note(summary.frontier)}):")
    frontier_table(summary.frontier, summary.objectives, shown_path(os.path.abspath(summary.space))
                   if summary.space != "SPACE" else "SPACE")
    if summary.regime and len(summary.regime["sizes"]) > 1:  # the frontier compares sizes: in which regime
        regime(summary.regime)
    uri = summary.tracking_uri
    click.echo(f"\nMLflow: parent run {summary.parent_run_id} in experiment {summary.experiment!r}")
    click.echo(f"  open the UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
               if not uri.startswith("http") else f"  open the UI:  {uri}")
    click.echo(f"  then {ui_runs_link(summary)} -> select runs -> Compare")
    click.echo(f"  resume:       add --resume (state in {shown_path(summary.state_dir)})")


def every_trial_failed(summary) -> None:
    """The line on stderr that ends a search in which no trial succeeded: the first reason,
    and where every trial's is."""
    click.echo(f"error: every trial failed ({summary.failed} of {summary.trials} failed or infeasible); "
               f"the first, {summary.first_failure}; each trial's reason is in its ledger line "
               f"({shown_path(summary.state_dir)}/results.jsonl) and its MLflow run's optimix.error tag",
               err=True)


def ui_runs_link(summary) -> str:
    """Where the MLflow UI shows the search's runs. MLflow 3.17 opens an experiment by the workflow
    the browser last chose, GenAI (traces) unless the user picked Model training, whatever the
    experiment's ``mlflow.experimentKind`` tag says; ``workflowType=machine_learning`` opens
    the runs table, with each search's trials nested under it."""
    uri = summary.tracking_uri
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    if summary.experiment_id is None:
        return f"{base} -> Model training -> {summary.experiment}"
    return f"{base}/#/experiments/{summary.experiment_id}/runs?workflowType=machine_learning"


def interrupted(summary, signal_name: str, resume_line: str) -> None:
    """What an interrupted search says, on stderr: what it kept, and how to take it up (no
    ``summary``: it was stopped while Ray started, before it wrote anything)."""
    if summary is None:
        click.echo(f"search: interrupted by {signal_name} while Ray started; nothing was written", err=True)
        return
    click.echo(f"search {summary.experiment}: interrupted by {signal_name} after {summary.trials} "
               f"finished trials ({summary.spent_flops:.3g} FLOPs); they are kept in "
               f"{shown_path(summary.state_dir)}", err=True)
    click.echo(resume_line, err=True)


def shown_path(path: str) -> str:
    """A path under the working directory, relative to it."""
    return os.path.relpath(path) if path.startswith(os.getcwd() + os.sep) else path


def frontier(record, rows) -> None:
    """``optimix frontier``: the search's counts, then its frontier rows."""
    ok = sum(t.status == "ok" for t in record.trials)
    click.echo(f"experiment {record.experiment}, search {record.run_id}: {len(record.trials)} trials, "
               f"{ok} ok, frontier of {len(rows)} ({sum(not r['final'] for r in rows)} "
               f"learning-curve points{_tied_note(rows)}) over "
               + ", ".join(f"{o.metric} ({o.mode})" for o in record.objectives))
    frontier_table(rows, record.objectives)
    from optimix.plan.plan_table import trial_regime  # the sizes' regime, beside the sizes' rows

    regime(trial_regime(record.trials).to_dict())


def frontier_table(rows, objectives, space: str = "SPACE") -> None:
    """Frontier rows (``optimix.core.frontier.row``), one line each: a measured objective as
    ``mean ± sd (n)`` over its config's seeds (``value (1)`` for one seed), whether it is
    confirmed, where the seeds split into learned and not; then how to retrain it."""
    metrics = [o.metric for o in objectives]
    head = f"{'run':<34}{'at':>11}" + "".join(f"{m:>18}" for m in metrics) + f"{'params':>10}  point"
    click.echo(head)
    for r in rows:
        point = " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in r.get("point", {}).items()
                         if not (k == "seed" and r.get("n", 1) > 1))  # a row over seeds shows none of them
        at = "final" if r.get("final", True) else f"step {r['step']}"
        stats = r.get("stats") or {}
        cells = [_seeds_cell(stats[m]) if m in stats else _fmt(r.get(m)) for m in metrics]
        notes = [_split_note(stats[m]) for m in metrics if m in stats and stats[m].get("learned")]
        if "confirmed" in r and not r["confirmed"] and r.get("final", True):
            notes.append("unconfirmed")
        if r.get("count", 1) > 1 and "n" not in r:
            notes.append(f"{r['count']} trials")
        click.echo(f"{r['run_id'] or '-':<34}{at:>11}" + "".join(f"{c:>18}" for c in cells)
                   + f"{int(r['params']):>10,}  {point}" + (f"  ({'; '.join(notes)})" if notes else ""))
        if r.get("overrides") is not None and r.get("final", True):
            click.echo(f"{'':<45}retrain: {retrain_line(r, space)}")


def retrain_line(row, space: str = "SPACE") -> str:
    """``optimix train SPACE --set KEY=VALUE ... --seed SEED``: a frontier row's config at its
    first seed, which trains its first recorded trial again, result for result (a curve point:
    that trial's run, read at the step named)."""
    sets = " ".join(f"--set {o}" for o in row.get("overrides", []))
    seeds = [s for s in row.get("seeds", []) if s is not None]
    seed = f" --seed {seeds[0]}" if seeds else ""
    step = "" if row.get("final", True) else f"  # a curve point: step {row['step']} of {row['steps']}"
    return f"optimix train {space} {sets}{seed}{step}"


def _seeds_cell(stat) -> str:
    if stat.get("sd") is None:
        return f"{_fmt(stat['mean'])} (1)"
    return f"{_fmt(stat['mean'])} ± {stat['sd']:.2f} ({stat['n']})"


def _split_note(stat) -> str:
    learned = stat["learned"]
    return f"{learned['seeds']} of {learned['of']} seeds learned it (>= {learned['at_least']:.2f})"


def _tied_note(rows) -> str:
    """How many trials the final results stand for, where ties made some of them one row."""
    finals = [r for r in rows if r.get("final", True)]
    trials = sum(r.get("count", 1) for r in finals)
    return f"; the final results stand for {trials} trials" if trials > len(finals) else ""


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def plan(doc) -> None:
    """``optimix plan`` over recorded trials: the answer, then --validate and --verify."""
    click.echo(f"experiment {doc['experiment']}, search {doc['search_run_id']}: planning {doc['metric']}")
    if doc.get("query") is not None:
        _answer(doc, doc["metric"])
        _fit(doc.get("fit"), doc.get("frequency_vs_size"))
        regime(doc.get("regime"), doc.get("frequency_vs_size"))
        _cost(doc)
    if doc.get("validate"):
        _validate(doc["validate"])
    ver = doc.get("verify")
    if ver:
        got = "-" if ver["achieved"] is None else f"{ver['achieved']:.3f}"
        each = ver.get("achieved_seeds") or [ver["achieved"]]
        seeds = "" if len(each) == 1 else (
            f" (mean of {len(each)} fresh seeds: " + ", ".join("-" if a is None else f"{a:.3f}" for a in each) + ")")
        inside = ver.get("seeds_within_trial_interval")
        per_seed = ("" if len(each) == 1 or inside is None else
                    f"; {sum(bool(x) for x in inside)} of {len(each)} seeds inside one trial's interval")
        click.echo(f"verify      trained {ver['params']:,} params on {ver['tokens']:,} tokens ({ver['status']}): "
                   f"achieved {got}{seeds}, predicted {ver['predicted']:.3f}"
                   + ("" if ver["within_interval"] is None else
                      (" (inside its interval)" if ver["within_interval"] else " (outside its interval)"))
                   + per_seed)


def _answer(doc, metric: str) -> None:
    """The query, and what the trials observed and the fit predicts for it."""
    query = doc["query"]
    what = (f"best {metric} for {query['budget_flops']:.3g} FLOPs" if "budget_flops" in query
            else f"cheapest way to {metric} >= {query['target_acc']:g}")
    if "params" in query:
        what += f" at {query['params']:,.0f} params"
    click.echo(f"query       {what} ({doc['trials']['ok']} of {doc['trials']['recorded']} trials finished)")
    if doc.get("constraints"):
        c = doc["constraints"]
        which = f" ({'; '.join(c['constraints'])})" if c.get("constraints") else ""
        if c["met"]:
            click.echo(f"constraints {c['met']} finished trials met the search's constraints{which}, {c['missed']} "
                       f"missed: answers only from those, predictions only at "
                       f"{', '.join(f'{n:,}' for n in c['sizes'])} params")
        else:
            answered = ("no recorded answer; the prediction at the size asked is fitted on all of them"
                        if doc.get("predicted") else "no answer, recorded or predicted"
                        + ("; the threshold and law below are fitted on all of them" if doc.get("fit") else ""))
            click.echo(f"constraints none of the {c['missed']} finished trials met the search's constraints"
                       f"{which}: {answered}")
    obs = doc["observed"]
    click.echo("observed    " + ("no recorded trial answers it" if obs is None else
               f"{obs[metric]:.3f} by run {obs['run_id']} ({_config(obs['config'])}; "
               f"{obs['train_flops']:.3g} FLOPs; " + (obs["note"] if obs.get("note") else
               f"its config's {obs['seeds']} seeds average {obs['seeds_mean']:.3f}") + ")"))
    pred = doc["predicted"]
    if pred is None:
        click.echo(f"predicted   none: {doc.get('predicted_error')}")
        return
    reach = f", one trial reaches it in {pred['p_reach']:.0%} of draws" if pred.get("p_reach") is not None else ""
    if pred["interval"]:
        band = "[{:.3f}, {:.3f}]".format(*pred["interval"])
        one = " one trial [{:.3f}, {:.3f}],".format(*pred["trial_interval"]) if pred.get("trial_interval") else ""
        spread = f"{band} (mean over seeds;{one} 90%)"
    else:
        spread = "(mean over seeds; no interval: the trials cannot place the threshold at this size)"
    click.echo(f"predicted   {pred[metric]:.3f} {spread} with "
               f"{_config(pred['config'])} ({pred['train_flops']:.3g} FLOPs{reach})")
    if pred.get("recorded_run"):
        click.echo(f"            run {pred['recorded_run']} already answers it at no more FLOPs: recommended as is")
    if pred["extrapolated"]:
        click.echo(f"            extrapolated: {'; '.join(pred['outside'])}")


def _fit(fit, cmp_) -> None:
    """The threshold at the answer, the law and how well it fits, frequency against size, notes."""
    extra = f" ({fit['extrapolation']})" if fit and fit.get("extrapolation") else ""
    if fit and fit.get("threshold_undetermined"):
        click.echo(f"threshold   undetermined at {fit['at']['params']:,.0f} params: "
                   f"{fit['threshold_undetermined']}{extra}")
    elif fit and fit.get("threshold_freq") is not None:
        lo, hi = fit["threshold_interval"]
        click.echo(f"threshold   at {fit['at']['params']:,.0f} params, {fit['at']['tokens']:,.0f} tokens: "
                   f"{fit['threshold_freq']:.3g} [{lo:.3g}, {hi:.3g}]{extra}")
    if fit:
        click.echo(f"law         {_law(fit)}")
    if cmp_:
        f2, n2 = cmp_["double_frequency"], cmp_["double_params"]
        if cmp_["winner"] == "undetermined":
            verdict = f"undetermined: {cmp_['undetermined']}"
        else:
            agree = cmp_["p_frequency_wins"] if cmp_["winner"] == "frequency" else 1 - cmp_["p_frequency_wins"]
            verdict = ("raise the frequency" if cmp_["winner"] == "frequency" else "grow the model") + \
                f" ({agree:.0%} of draws agree)"
        click.echo(f"freq/size   doubling rare_freq {f2['acc_gain']:+.3f}, doubling params at equal "
                   f"{cmp_['at_equal']} {n2['acc_gain']:+.3f}: {verdict}")
    for note in [*(fit or {}).get("notes", []), *(cmp_ or {}).get("notes", [])]:
        click.echo(f"            note: {note}")


def regime(reg, cmp_=None) -> None:
    """The regime a grow-or-boost answer stands in (``optimix.core.regime``): tokens per
    parameter and learning rates at each recorded size, at the sizes ``cmp_`` compares, and
    whether that favours the smaller model."""
    if not reg or not reg["lines"]:
        return
    click.echo("regime      " + "; ".join(reg["lines"]))
    if cmp_:
        per = cmp_["tokens_per_param"]
        click.echo(f"            compared: {cmp_['base']['params']:,.0f} params at {per['base']:.2g} tokens/param "
                   f"against {cmp_['double_params']['params']:,.0f} at {per['double_params']:.2g} "
                   f"(compute-optimal: about {reg['compute_optimal_tokens_per_param']:g})")
    if reg["verdict"]:
        click.echo(f"            caution: {reg['verdict']}")


def _law(fit) -> str:
    """The power law with its slope's sign as fitted, and the goodness of fit of what answers use."""
    law, quality = fit.get("power_law"), fit["quality"]
    if law is None:
        return "one recorded size: no law over sizes"
    text = f"f_thres = {law['c']:.3g} * N^{-law['s']:+.3g}"
    if law["s_interval"]:
        text += " (s in [{:.3g}, {:.3g}])".format(*law["s_interval"])
    if law.get("u") is not None:
        text += f" * T^{-law['u']:+.3g}"
    for key, label in (("power_law", "power law"), ("curve", "answers use")):
        q = quality[key]
        if q is None or (key == "curve" and q["kind"].startswith("power law")):
            continue
        # on 0 degrees of freedom the curve passes through every size: nothing is left to test it
        fitness = "untested (0 df)" if not q["df"] else "fits badly" if q["fits_badly"] else "fits"
        p = "" if q["p_value"] is None else f", p {q['p_value']:.2g}"
        name = label if key == "power_law" else f"{label} a {q['kind']}"
        misfit = f"misfit sd {q['misfit_sd']:.3g}" + (" (assumed)" if q.get("misfit_assumed") else "")
        text += f"; {name}: chi2 {q['chi2']:.3g} on {q['df']} df{p}, {misfit}: {fitness}"
    seeds = (f"seeds {quality['seed_sd_logit']:.2g}" if quality.get("seed_noise") != "unmeasured" else
             f"seeds {quality['seed_sd_logit']:.2g} (seed noise unmeasured: no config in the transition, "
             "accuracy between 0.02 and 0.98, was trained at several seeds; a conservative prior is "
             "assumed; search.replicates measures it)")
    return text + (f"; {quality['sizes']} sizes; scatter on the logit scale: {seeds}, "
                   f"configs {quality['config_sd_logit']:.2g}")


def _cost(doc) -> None:
    hwp = doc["hardware"]
    if doc.get("gpu_hours") is None:
        return
    click.echo(f"cost        {doc['gpu_hours']:.3g} device-hours, ${doc['cost_usd']:.3g} on {hwp['name']} "
               f"(${hwp['usd_per_hour']:g}/h)" + (f"; recorded hardware {_hours(doc['recorded_hours'])} at its "
                                                   "measured rate" if doc.get("recorded_hours") else ""))
    if doc.get("cost_note"):
        click.echo(f"            note: {doc['cost_note']}")


def _validate(val) -> None:
    """The hard splits against the goal, and the seed baseline."""
    goal = val["goal"]
    click.echo(f"validate    {val['trials']} trials, {val['configs']} configs, {val['transition_trials']} "
               f"in the transition (config mean in [0.05, 0.95])")
    for name, label in (("size", "leave one size out"), ("config", val["splits"]["config"].get("method", ""))):
        split = val["splits"][name]
        if "skipped" in split:
            click.echo(f"  {label}: skipped ({split['skipped']})")
            continue
        extra = f", thresholds inside their interval {split['threshold_coverage']}" if "threshold_coverage" in split else ""
        click.echo(f"  {label}: Spearman {_fmt(split['spearman'])}, MAE {_fmt(split['mae'])}, transition MAE "
                   f"{_fmt(split['transition_mae'])}; 90% intervals hold {_pct(split['trial_coverage'])} of trials, "
                   f"{_pct(split['transition_cell_coverage'])} of {split['transition_cells']} transition configs' means{extra}")
    base = val["baseline"]
    click.echo("  baseline (other seeds' mean): " + (base.get("note") or
               f"MAE {_fmt(base['mae'])}, transition MAE {_fmt(base['transition_mae'])} over {base['trials']} trials"))
    click.echo(f"  goal on {val['judged_on']}: Spearman >= {goal['spearman']}, MAE <= {goal['mae']}, transition MAE <= "
               f"{goal['transition_mae']}: " + ("met" if val["meets_goal"] else "missed"))


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _config(config) -> str:
    return (f"params {config['params']:,.0f}, rare_freq {config['rare_freq']:.3g}, "
            f"tokens {config['tokens']:,.0f}")


def outlook(doc) -> None:
    """``optimix plan SPACE``: what the space's trials will cost."""
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
                   f"{_hours(c['wall_hours'])} wall, "
                   f"{c['device_hours']:.3g} device-hours, ${c['cost_usd']:.3g}")
    click.echo(f"note         {doc['note']}")


def _hours(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.3g} s"
    return f"{hours * 60:.3g} min" if hours < 1 else f"{hours:.3g} h"


def trial(result, scored: dict[str, str] | None = None) -> None:
    """``optimix train``: one trial's result; ``scored``: per task, what its accuracy is scored on
    (``held-out`` inputs or ``trained`` items, i.e. memorisation)."""
    shape = result.shape
    click.echo(f"status      {result.status}" + (f"  ({result.error})" if result.error else ""))
    click.echo(f"model       {result.params:,} params ({result.non_embedding_params:,} non-embedding), "
               f"d_model={shape['d_model']} n_layer={shape['n_layer']} n_head={shape['n_head']}")
    click.echo(f"trained     {result.tokens:,} tokens, {result.steps:,} steps, "
               f"{result.train_flops:.3g} FLOPs on {result.device}")
    click.echo(f"time        {result.wall_s:.1f} s ({result.train_s:.1f} s training, "
               f"{result.tokens_per_s:,.0f} tokens/s)")
    if result.accuracy:
        scored = scored or {}
        click.echo(f"{'task':<12}{'accuracy':>10}{'loss':>10}  scored on")
        for name, acc in result.accuracy.items():
            on = {"trained": "trained items (memorisation)", "held-out": "held-out inputs"}.get(scored.get(name), "")
            click.echo(f"{name:<12}{acc:>10.3f}{result.loss[name]:>10.3f}  {on}".rstrip())
