"""The ``stabsearch`` command line.

Exit status: 0 success, 2 bad input (one line on stderr, no traceback),
1 an internal error or a ``run`` whose every trial failed, 130 interrupted. Every input is checked before a study is
opened, so bad input never changes a stored study.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from stabsearch import api
from stabsearch.api import LIMITS
from stabsearch.config import PRECISIONS
from stabsearch.errors import UsageError
from stabsearch.reporting.export import FORMATS, format_recommendation
from stabsearch.inputs import Finite, printable

_STORAGE_HELP = "Study storage: an SQLAlchemy URL or journal:PATH [default: sqlite:///studies/stabsearch.db]"


def _storage_option(f):  # noqa: ANN001, ANN202
    return click.option("--storage", default=None, metavar="URL", help=_STORAGE_HELP)(f)


def _study_option(f):  # noqa: ANN001, ANN202
    return click.option("--study", default=None, metavar="NAME", help="Study name [default: the storage's only study].")(f)


def _count(name: str) -> click.IntRange:
    """The click type of an integer argument of the API, with the API's bounds (:data:`~stabsearch.api.LIMITS`)."""
    low, high, _ = LIMITS[name]
    return click.IntRange(low, high)


def _real(name: str) -> Finite:
    """The click type of a real argument of the API, with the API's bounds."""
    low, high, low_open = LIMITS[name]
    return Finite(low, high, low_open=low_open)


def _confirm_options(f):  # noqa: ANN001, ANN202
    f = click.option("--stress", type=_real("stress"), default=2.0, show_default=True,
                     help="Confirmation horizon, in multiples of the search steps.")(f)
    f = click.option("--seeds", type=_count("seeds"), default=3, show_default=True,
                     help="New seeds each confirmed configuration is re-run on.")(f)
    return click.option("--confirm", type=_count("confirm"), default=3, show_default=True,
                        help="How many of the best configurations to confirm (0: none).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stabsearch")
def cli() -> None:
    """Find optimizer settings that train your PyTorch model well and stably."""


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("--study", default=None, metavar="NAME", help="Study name [default: the model module's name].")
@_storage_option
@click.option("--trials", type=_count("trials"), default=20, show_default=True, help="Finished search trials the study should have (a rerun resumes).")
@click.option("--steps", type=_count("steps"), default=None, help="Steps per trial [default: the module's STEPS, else 1000].")
@click.option("--timeout", type=_real("timeout"), default=None, metavar="SECONDS",
              help="Stop the search after this long: the running trial stops at its next step and is re-queued.")
@click.option("--trial-timeout", type=_real("trial_timeout"), default=None, metavar="SECONDS",
              help="A trial still training after this long ends FAIL 'timed out' (counted, not retried).")
@click.option("--seed", type=_count("seed"), default=0, show_default=True, help="Seeds the sampler, the model and the data.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None, metavar="FILE", help="YAML file of search-space overrides.")
@click.option("--warning-penalty", type=_real("warning_penalty"), default=1.0, show_default=True,
              help="Decades added to the score of a trial predicted to blow up later (0: off).")
@click.option("--early-warning/--no-early-warning", default=True, show_default=True,
              help="Probe each trial's sharpness at its end and warn of a later eps blow-up (--no-early-warning: no probe at all).")
@click.option("--stop-slow/--no-stop-slow", default=True, show_default=True,
              help="Stop a search trial whose loss is above the median of the finished trials' at the same step.")
@click.option("--population", type=_count("population"), default=1, show_default=True, metavar="K",
              help="Train K trials at once as one vectorized population (torch.func.vmap), 1024 at most, if a timed step says it is faster.")
@click.option("--force-population", is_flag=True, default=False,
              help="Train the --population even where its timed step is slower than K sequential steps.")
@click.option("--workers", type=_count("workers"), default=1, show_default=True,
              help="Worker processes sharing the study (one per GPU when there are several); at most two per CPU core.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Train at float32, bfloat16 autocast or float16 autocast with a GradScaler [default: the module's PRECISION, else 32].")
@click.option("--heartbeat", type=_real("heartbeat"), default=10.0, show_default=True,
              metavar="SECONDS", help="Heartbeat interval; a trial silent for 6 beats is recovered as 'worker lost'.")
@_confirm_options
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def run(model: str, study: str | None, storage: str | None, trials: int, steps: int | None, timeout: float | None,
        trial_timeout: float | None, seed: int, device: str, space_file: str | None, warning_penalty: float,
        early_warning: bool, stop_slow: bool, population: int, force_population: bool, workers: int, precision: str | None,
        heartbeat: float, confirm: int, seeds: int, stress: float, progress: bool) -> None:
    """Search optimizer settings for the model module MODEL (a .py file or module name).

    After the search, the best --confirm configurations are re-run on --seeds new
    seeds at --stress times the steps, and so is the backed-off recommendation.
    """
    result = _run(
        api.search, model, study=study, storage=storage, trials=trials, steps=steps, seed=seed, device=device,
        space=space_file, population=population, force_population=force_population, workers=workers, confirm=confirm,
        seeds=seeds, stress=stress, timeout=timeout, trial_timeout=trial_timeout, warning_penalty=warning_penalty,
        early_warning=early_warning, stop_slow=stop_slow, precision=precision, heartbeat=heartbeat, progress=progress,
        log=_echo,
    )
    flags = api.study_flags(result.study, result.storage if storage else None)
    summary = result.search
    if result.outcome == "interrupted" and result.confirmation is None:
        click.echo("interrupted: the unfinished trial was re-queued; run the same command to resume", err=True)
        sys.exit(130)
    if result.outcome == "failed":
        where = "the error above" if summary.first_error is not None else f"what `stabsearch trials {flags}` shows"
        click.echo(f"every trial this run trained failed ({summary.new_failed} of {summary.new_trials}): fix {where}, "
                   "then run again with a new --study (failed trials count toward --trials)", err=True)
        sys.exit(1)
    if result.outcome == "timed out":
        click.echo("timeout reached: run the same command to continue", err=True)
        return
    if result.outcome == "worker errors":
        sys.exit(1)
    _after_confirmation(result, flags)


def _echo(line: str) -> None:
    click.echo(line, err=True)


def _run(call, *args, **kwargs) -> api.SearchResult:  # noqa: ANN001, ANN002, ANN003
    """``call`` (api.search or api.confirm) with SIGINT and SIGTERM handled (:mod:`stabsearch.study.interrupts`).

    After a signal that stopped it, the interrupt stays shielded, and any more are ignored until the exit:
    the trials are re-queued, and a Ctrl-C still held down must not cut the exit short. A Ctrl-C raised by
    user code, not a signal, leaves the handlers alone.
    """
    from stabsearch.study import interrupts

    with interrupts.handling():
        result = call(*args, **kwargs)
        if result.interrupted and interrupts.interrupted():
            interrupts.ignore_until_exit()
    return result


def _after_confirmation(result: api.SearchResult, flags: str) -> None:
    """The end of ``run`` and ``confirm``: an interrupted confirmation exits 130, else the next command to type."""
    if result.outcome == "interrupted":
        click.echo("interrupted: run the same command to resume the confirmation", err=True)
        sys.exit(130)
    click.echo(f"next: stabsearch recommend {flags}", err=True)


@cli.command()
@click.argument("model", metavar="MODEL")
@_study_option
@_storage_option
@click.option("--seed", type=_count("seed"), default=None, help="Base seed [default: the study's].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None, metavar="FILE", help="YAML file of search-space overrides.")
@_confirm_options
@click.option("--early-warning/--no-early-warning", default=True, show_default=True,
              help="Probe each run's sharpness at its end (--no-early-warning: no probe at all).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def confirm(model: str, study: str | None, storage: str | None, seed: int | None, device: str, space_file: str | None,
            confirm: int, seeds: int, stress: float, early_warning: bool, progress: bool) -> None:
    """Confirm a finished search of MODEL on new seeds at a longer horizon (resumes where it stopped)."""
    result = _run(api.confirm, model, study=study, storage=storage, seed=seed, device=device, space=space_file,
                  confirm=confirm, seeds=seeds, stress=stress, early_warning=early_warning, progress=progress, log=_echo)
    _after_confirmation(result, api.study_flags(result.study, result.storage if storage else None))


@cli.command()
@_study_option
@_storage_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--show", type=click.IntRange(min=0), default=None, metavar="N",
              help="Print everything about trial N: settings, verdict, early warning, checks, error and traceback, curve file.")
def trials(study: str | None, storage: str | None, fmt: str, show: int | None) -> None:
    """List a study's trials with their verdicts, scores and settings (or one trial in full, with --show)."""
    from stabsearch.study.storage import load_study, open_storage
    from stabsearch.study.trial_attrs import study_records

    store = open_storage(storage)
    loaded = load_study(store, study)
    if show is not None:
        _show_trial(loaded, store, show, fmt)
        return
    records = study_records(loaded)
    if fmt == "json":
        click.echo(json.dumps([{**r.to_dict(), "curve_file": _curve_file(store, r)} for r in records], indent=2))
        return
    rows = [_row(r.to_dict()) for r in records]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["number"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
        return
    click.echo(_table(rows) if rows else f"study {loaded.study_name!r} has no trials yet")


def _curve_file(store, record) -> str | None:  # noqa: ANN001
    """The absolute path of the trial's loss-curve CSV, or None when it has none on disk."""
    artifact = record.curve_artifact
    if not artifact or not re.fullmatch(r"[0-9A-Za-z-]+", str(artifact)):
        return None
    path = Path(store.artifacts_dir) / str(artifact)
    return str(path.resolve()) if path.is_file() else None


def _kind(d: dict) -> str:
    return "probe" if d.get("probe") else "rescue" if d.get("rescue") else "back-off" if d.get("backoff") else d["kind"]


def _fmt(v) -> str:  # noqa: ANN001
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _row(d: dict) -> dict:
    p = d["params"]
    penalty = d.get("warning_penalty") or 0.0
    return {
        "number": d["number"], "kind": _kind(d),
        "state": d["state"], "verdict": d["verdict"],
        "score": _fmt(d["score"]), "penalty": f"+{penalty:.3g}" if penalty else "",
        "final_loss": _fmt(d["final_loss"]), "spikes": d["spikes"],
        "optimizer": p.get("optimizer", ""), "lr": _fmt(p.get("lr")), "eps": _fmt(p.get("eps")),
        "beta1": _fmt(p.get("beta1")), "beta2": _fmt(p.get("beta2")), "weight_decay": _fmt(p.get("weight_decay")),
        "schedule": p.get("schedule", ""), "warmup": _fmt(p.get("warmup")),
        "failure": printable(d.get("failure") or ""), "error": printable(d.get("error") or ""),
        "warning": printable(_clip(d.get("warning") or "", 90)) if penalty else "",
    }


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _show_trial(study, store, number: int, fmt: str) -> None:  # noqa: ANN001
    """``trials --show N``: one trial in full, as text or JSON."""
    from stabsearch.study.trial_attrs import HINT, STOPPED_SLOW_AT, TRACEBACK, trial_record

    if fmt == "csv":
        raise UsageError("--show prints one trial as text (the default) or with --format json, not csv")
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        count = len(study.get_trials(deepcopy=False))
        known = f"its trials are numbered 0 to {count - 1}" if count else "it has no trials yet"
        raise UsageError(f"--show {number}: study {study.study_name!r} has no trial {number} ({known})")
    trial = found[0]
    record = trial_record(trial)
    extra = {"curve_file": _curve_file(store, record), "traceback": trial.user_attrs.get(TRACEBACK),
             "hint": trial.user_attrs.get(HINT), "stopped_slow_at": trial.user_attrs.get(STOPPED_SLOW_AT)}
    if fmt == "json":
        click.echo(json.dumps({**record.to_dict(), **extra}, indent=2))
        return
    click.echo("\n".join(_show_lines(record.to_dict(), extra)))


def _show_lines(d: dict, extra: dict) -> list[str]:
    """The text of ``trials --show``: one ``label: value`` line per fact, then the traceback."""
    kind = _kind(d) + (f" of trial {d['of']}" if d.get("of") is not None else "")
    ran = f" (ran {d['steps_run']})" if d.get("steps_run") is not None and d["steps_run"] != d.get("steps") else ""
    spikes = f"{d['spikes']} ({d['late_spikes']} late)"
    if d.get("diverged_at") is not None:
        spikes += f"; diverged at step {d['diverged_at']}"
    if extra.get("stopped_slow_at") is not None:
        spikes += f"; stopped as slow at step {extra['stopped_slow_at']}"
    facts = [
        ("state", f"{d['state']}, verdict {d['verdict']}"), ("kind", kind), ("seed", d.get("seed")),
        ("steps", None if d.get("steps") is None else f"{d['steps']}{ran}"),
        ("settings", " ".join(f"{k}={f'{v:.6g}' if isinstance(v, float) else v}" for k, v in d["params"].items())),
        ("score", _fmt(d["score"])), ("final loss", _fmt(d["final_loss"])), ("spikes", spikes if d["state"] != "FAIL" else None),
        ("failure", d.get("failure")), ("early warning", _warning_text(d)),
        ("checks", "; ".join(f"{name} {outcome}" for name, outcome in d.get("checks", {}).items()) or None),
        ("curve", f"{extra['curve_file']} (CSV; `stabsearch analyze` reads it)" if extra.get("curve_file")
                  else "its file is missing from the artifact store" if d.get("curve_artifact") else None),
        ("error", d.get("error")), ("hint", extra.get("hint")),
    ]
    width = max(len(label) for label, _ in facts) + 2
    lines = [f"trial {d['number']}"] + [f"  {label + ':':<{width}}{value}" for label, value in facts if value not in (None, "")]
    if extra.get("traceback"):
        lines += ["  traceback:"] + ["    " + line for line in extra["traceback"].rstrip().splitlines()]
    return lines


def _warning_text(d: dict) -> str | None:
    penalty, reason = d.get("warning_penalty") or 0.0, d.get("warning")
    if penalty:
        return f"penalty +{penalty:.3g} (decades added to the score): {reason}"
    if reason is None:
        return None
    return f"{'predicted to blow up, but no penalty' if d.get('predicted_unstable') else 'no penalty'}: {reason}"


def _table(rows: Sequence[dict]) -> str:
    columns = [c for c in rows[0] if c not in ("penalty", "failure", "error", "warning") or any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@cli.command()
@_study_option
@_storage_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="yaml", show_default=True)
def recommend(study: str | None, storage: str | None, fmt: str) -> None:
    """Print the recommended optimizer settings, with their evidence."""
    click.echo(format_recommendation(api.recommend(study, storage), fmt), nl=False)


@cli.command()
@click.argument("file", metavar="FILE")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--classes", type=click.IntRange(min=2), default=None, help="Balanced classes K: ln K is the chance loss.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True, help="Warmup steps (no divergence test before).")
@click.option("--lr", type=Finite(0.0, 1e6, low_open=True), default=None, help="The run's learning rate, for the advice.")
@click.option("--eps", type=Finite(0.0, 1e6, low_open=True), default=None, help="The run's Adam eps, for the advice.")
def analyze(file: str, fmt: str, classes: int | None, warmup: int, lr: float | None, eps: float | None) -> None:
    """Diagnose the loss log FILE from any run: a CSV with a loss column, or one number per line."""
    from stabsearch.analysis.diagnosis import RunFacts, diagnose, format_text
    from stabsearch.config import chance_loss

    result = api.analyze(file, chance_loss=chance_loss(classes), warmup=warmup)
    advice = diagnose(result, RunFacts(lr=lr, eps=eps))
    if fmt == "json":
        click.echo(json.dumps({"file": file, **result.to_dict(), "diagnosis": advice}, indent=2))
    else:
        click.echo(format_text(result, advice, source=file))


@cli.command()
@_storage_option
def studies(storage: str | None) -> None:
    """List the studies in a storage, with their trial counts."""
    from stabsearch.study.optuna_internals import study_id
    from stabsearch.study.trial_attrs import STUDY_MODEL
    from stabsearch.study.storage import open_storage

    store = open_storage(storage)
    summaries = store.storage.get_all_studies()
    if not summaries:
        click.echo(f"no studies in {store.shown}")
        return
    rows = []
    for s in summaries:
        states = [t.state.name for t in store.storage.get_all_trials(study_id(s), deepcopy=False)]
        rows.append({
            "study": printable(s.study_name), "trials": len(states), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"), "running": states.count("RUNNING"),
            "model": s.user_attrs.get(STUDY_MODEL, ""),
        })
    click.echo(_table(rows))


@cli.command()
@_study_option
@_storage_option
@click.option("--output", default=None, metavar="PATH", help="HTML file to write [default: studies/<study>.html].")
@click.option("--dashboard/--no-dashboard", "to_dashboard", default=True, show_default=True,
              help="Also save the figures and a summary note on the study for optuna-dashboard.")
def report(study: str | None, storage: str | None, output: str | None, to_dashboard: bool) -> None:
    """Write the study's safe-region report: one self-contained HTML file that works offline."""
    click.echo(str(api.report(study, storage, output, dashboard=to_dashboard, log=_echo)))


@cli.command()
@_storage_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (the dashboard has no login).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on (0: any free port).")
def dashboard(storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the storage, with each trial's loss curve as an artifact (Ctrl-C stops it)."""
    from stabsearch.reporting.dashboard import is_loopback, make_server, serve
    from stabsearch.study.storage import open_storage

    store = open_storage(storage)
    server = make_server(store, host, port)
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"optuna-dashboard for {store.shown} on http://{shown_host}:{server.server_port}/ (Ctrl-C to stop)", err=True)
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach it can read, edit and delete these studies", err=True)
    serve(server)
    click.echo("dashboard stopped", err=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI and map errors to exit statuses."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="stabsearch", standalone_mode=False)
    except UsageError as exc:
        click.echo(f"stabsearch: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.ClickException as exc:
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else ""
        click.echo(f"stabsearch: error: {where}{' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("stabsearch: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:
        from stabsearch.study.storage import is_storage_fault, last_opened, storage_error

        if not is_storage_fault(exc):
            raise
        click.echo(f"stabsearch: error: {storage_error(last_opened(), exc)}", err=True)
        sys.exit(2)
