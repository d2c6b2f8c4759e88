"""What the ``optimix`` command prints on the terminal: the search's progress line and
summary, frontier tables, planning answers, space outlooks and single trials.

Each printer takes the document or record a command got (a ``--json`` document is the same
document as JSON) and writes lines with ``click.echo``; none computes anything of its own.
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
    click.echo(f"search {summary.experiment}: {summary.trials} trials ({summary.ok} ok{pruned}, "
               f"{summary.failed} failed or infeasible), {summary.spent_flops:.3g}{budget} FLOPs{lost}, "
               f"{summary.wall_s:.0f} s")
    if summary.stalled is not None:
        click.echo(f"stopped early: the frontier did not move in the last {summary.stalled} trials "
                   f"(search.patience: {summary.patience})"
                   + ("; a trial that was still running then moved it" if summary.moved_since_stalled else ""))
    n_curve = sum(not r.get("final", True) for r in summary.frontier)
    n_final = len(summary.frontier) - n_curve
    click.echo(f"Pareto frontier ({n_final} final result{'s' * (n_final != 1)}, "
               f"{n_curve} learning-curve point{'s' * (n_curve != 1)}{_tied_note(summary.frontier)}):")
    frontier_table(summary.frontier, summary.objectives)
    uri = summary.tracking_uri
    click.echo(f"\nMLflow: parent run {summary.parent_run_id} in experiment {summary.experiment!r}")
    click.echo(f"  open the UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
               if not uri.startswith("http") else f"  open the UI:  {uri}")
    click.echo(f"  then http://127.0.0.1:5000 -> {summary.experiment} -> select runs -> Compare")
    click.echo(f"  resume:       add --resume (state in {shown_path(summary.state_dir)})")


def interrupted(summary, signal_name: str, resume_line: str) -> None:
    """What an interrupted search says, on stderr: what it kept, and how to take it up."""
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
               + ", ".join(f"{m} ({d})" for m, d in record.objectives))
    frontier_table(rows, record.objectives)


def frontier_table(rows, objectives) -> None:
    """Frontier rows (``optimix.frontier.row``), one line each; a row that stands for several
    tied trials (``frontier.tied``) says how many."""
    metrics = [m for m, _ in objectives]
    head = f"{'run':<34}{'at':>11}" + "".join(f"{m:>14}" for m in metrics) + f"{'params':>10}  point"
    click.echo(head)
    for r in rows:
        point = " ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in r.get("point", {}).items())
        at = "final" if r.get("final", True) else f"step {r['step']}"
        click.echo(f"{r['run_id']:<34}{at:>11}" + "".join(f"{_fmt(r.get(m)):>14}" for m in metrics)
                   + f"{int(r['params']):>10,}  {point}"
                   + (f"  ({r['count']} trials)" if r.get("count", 1) > 1 else ""))


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


def _answer(doc, metric: str) -> None:
    """The query, and what the trials observed and the fit predicts for it."""
    query = doc["query"]
    what = (f"best {metric} for {query['budget_flops']:.3g} FLOPs" if "budget_flops" in query
            else f"cheapest way to {metric} >= {query['target_acc']:g}")
    click.echo(f"query       {what} ({doc['trials']['ok']} of {doc['trials']['recorded']} trials finished)")
    obs = doc["observed"]
    click.echo("observed    " + ("no recorded trial answers it" if obs is None else
               f"{obs[metric]:.3f} by run {obs['run_id']} ({_config(obs['config'])}; "
               f"{obs['train_flops']:.3g} FLOPs)"))
    pred = doc["predicted"]
    if pred is None:
        click.echo(f"predicted   none: {doc.get('predicted_error')}")
        return
    band = "[{:.3f}, {:.3f}]".format(*pred["interval"]) if pred["interval"] else ""
    reach = f", reaches it in {pred['p_reach']:.0%} of refits" if "p_reach" in pred else ""
    click.echo(f"predicted   {pred[metric]:.3f} {band} with {_config(pred['config'])} "
               f"({pred['train_flops']:.3g} FLOPs{reach})")
    if pred["extrapolated"]:
        click.echo(f"            extrapolated: {'; '.join(pred['outside'])}")


def _fit(fit, cmp_) -> None:
    """The threshold law, frequency against size, and the fit's notes."""
    if fit and fit.get("threshold_freq") is not None:
        law = f"f_thres = {fit['c']:.3g}"
        for key, var in (("s", "N"), ("u", "T")):
            if fit[key] is not None:
                lo, hi = fit[f"{key}_interval"]
                law += f" * {var}^-{fit[key]:.3g} ({key} in [{lo:.3g}, {hi:.3g}])"
        lo, hi = fit["threshold_interval"]
        click.echo(f"threshold   {law}; at {fit['at']['params']:,.0f} params, "
                   f"{fit['at']['tokens']:,.0f} tokens: {fit['threshold_freq']:.3g} [{lo:.3g}, {hi:.3g}]")
    if cmp_:
        f2, n2 = cmp_["double_frequency"], cmp_["double_params"]
        verdict = "raise the frequency" if cmp_["winner"] == "frequency" else "grow the model"
        agree = cmp_["p_frequency_wins"] if cmp_["winner"] == "frequency" else 1 - cmp_["p_frequency_wins"]
        click.echo(f"freq/size   doubling rare_freq {f2['acc_gain']:+.3f}, doubling params at equal FLOPs "
                   f"{n2['acc_gain']:+.3f}: {verdict} ({agree:.0%} of refits agree)")
    for note in [*(fit or {}).get("notes", []), *(cmp_ or {}).get("notes", [])]:
        click.echo(f"            note: {note}")


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


def trial(result) -> None:
    """``optimix train``: one trial's result."""
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
