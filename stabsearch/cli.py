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

from stabsearch.errors import UsageError
from stabsearch.reporting.export import FORMATS, format_recommendation
from stabsearch.inputs import Finite, check_name, printable

#: Largest --seed: seeds derived from it (the sampler's, confirmation runs') stay below numpy's 2**32.
MAX_SEED = 2**31 - 1

_STORAGE_HELP = "Study storage: an SQLAlchemy URL or journal:PATH [default: sqlite:///studies/stabsearch.db]"


def _storage_option(f):  # noqa: ANN001, ANN202
    return click.option("--storage", default=None, metavar="URL", help=_STORAGE_HELP)(f)


def _study_option(f):  # noqa: ANN001, ANN202
    return click.option("--study", default=None, metavar="NAME", help="Study name [default: the storage's only study].")(f)


def _confirm_options(f):  # noqa: ANN001, ANN202
    f = click.option("--stress", type=Finite(1.0, 100.0), default=2.0, show_default=True,
                     help="Confirmation horizon, in multiples of the search steps.")(f)
    f = click.option("--seeds", type=click.IntRange(1, 100), default=3, show_default=True,
                     help="New seeds each confirmed configuration is re-run on.")(f)
    return click.option("--confirm", type=click.IntRange(0, 100), default=3, show_default=True,
                        help="How many of the best configurations to confirm (0: none).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="stabsearch")
def cli() -> None:
    """Find optimizer settings that train your PyTorch model well and stably."""


@cli.command()
@click.argument("model", metavar="MODEL")
@click.option("--study", default=None, metavar="NAME", help="Study name [default: the model module's name].")
@_storage_option
@click.option("--trials", type=click.IntRange(1, 1_000_000), default=20, show_default=True, help="Finished search trials the study should have (a rerun resumes).")
@click.option("--steps", type=click.IntRange(1, 10**12), default=None, help="Steps per trial [default: the module's STEPS, else 1000].")
@click.option("--timeout", type=Finite(0.0, 1e8, low_open=True), default=None, metavar="SECONDS",
              help="Stop the search after this long: the running trial stops at its next step and is re-queued.")
@click.option("--trial-timeout", type=Finite(0.0, 1e8, low_open=True), default=None, metavar="SECONDS",
              help="A trial still training after this long ends FAIL 'timed out' (counted, not retried).")
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True, help="Seeds the sampler, the model and the data.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None, metavar="FILE", help="YAML file of search-space overrides.")
@click.option("--warning-penalty", type=Finite(0.0, 100.0), default=1.0, show_default=True,
              help="Decades added to the score of a trial predicted to blow up later (0: off).")
@click.option("--early-warning/--no-early-warning", default=True, show_default=True,
              help="Probe each trial's sharpness at its end and warn of a later eps blow-up (--no-early-warning: no probe at all).")
@click.option("--stop-slow/--no-stop-slow", default=True, show_default=True,
              help="Stop a search trial whose loss is above the median of the finished trials' at the same step.")
@click.option("--population", type=click.IntRange(min=1, max=1024), default=1, show_default=True, metavar="K",
              help="Train K trials at once as one vectorized population (torch.func.vmap), 1024 at most, if a timed step says it is faster.")
@click.option("--force-population", is_flag=True, default=False,
              help="Train the --population even where its timed step is slower than K sequential steps.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes sharing the study (one per GPU when there are several); at most two per CPU core.")
@click.option("--precision", type=click.Choice(["32", "bf16", "fp16"]), default=None,
              help="Train at float32, bfloat16 autocast or float16 autocast with a GradScaler [default: the module's PRECISION, else 32].")
@click.option("--heartbeat", type=Finite(0.01, 3600.0), default=10.0, show_default=True,
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
    from stabsearch.study.confirm import ConfirmSettings, run_confirmation
    from stabsearch.study.runner import SearchSettings, run_search
    from stabsearch.study.storage import open_storage

    if force_population and population == 1:
        raise UsageError("--force-population: give --population K (K >= 2) too")
    module, space, device_ = _load(model, space_file, device)
    precision = _precision(precision, module, device_)
    if workers > 1:
        from stabsearch.study.workers import check_workers

        check_workers(workers, device_)
    confirm_settings = ConfirmSettings(candidates=confirm, seeds=seeds, stress=stress)
    settings = SearchSettings(
        trials=trials, steps=steps or module.steps or 1000, seed=seed, timeout=timeout, trial_timeout=trial_timeout,
        device=device_, progress=progress, warning_penalty=warning_penalty, heartbeat=heartbeat,
        population=_population_size(module, device_, _population_for(space, precision, population), force=force_population),
        stop_slow=stop_slow, early_warning=early_warning, precision=precision, no_decay=module.no_decay,
    )
    name = check_name(study) if study is not None else module.name
    store = open_storage(storage, create=True)
    click.echo(f"study {name!r} in {store.shown}: {settings.trials} trials of {settings.steps} steps on {settings.device}", err=True)
    flags = _study_flags(name, store, storage)
    on_error = lambda trial: _tell(_error_line(trial, flags))  # noqa: E731
    if workers > 1:
        from stabsearch.study.runner import open_context
        from stabsearch.study.workers import run_workers

        summary = run_workers(workers, model, open_context(module, space, store, name, settings, on_error=on_error))
    else:
        summary = run_search(module, space, store, name, settings, on_error=on_error)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none"
    click.echo(f"{summary.finished}/{settings.trials} trials finished ({counts}); {summary.new_trials} new in {summary.seconds:.1f}s", err=True)
    for line in summary.worker_errors:
        click.echo(f"stabsearch: error: {line}; its trial was recovered", err=True)
    if summary.interrupted:
        _ignore_interrupts()  # the trials are re-queued: a Ctrl-C still held down must not cut the exit short
        click.echo("interrupted: the unfinished trial was re-queued; run the same command to resume", err=True)
        sys.exit(130)
    if summary.new_trials and summary.new_failed == summary.new_trials:
        where = "the error above" if summary.first_error is not None else f"what `stabsearch trials {flags}` shows"
        click.echo(f"every trial this run trained failed ({summary.new_failed} of {summary.new_trials}): fix {where}, "
                   "then run again with a new --study (failed trials count toward --trials)", err=True)
        sys.exit(1)
    if summary.timed_out:
        click.echo("timeout reached: run the same command to continue", err=True)
        return
    if summary.worker_errors:
        sys.exit(1)
    _confirm_and_report(module, space, store, name, settings, confirm_settings, storage)


def _study_flags(name: str, store, storage: str | None) -> str:  # noqa: ANN001
    """The options that point a later command at this study, as the user would type them."""
    return f"--study {name}" + (f" --storage '{store.shown}'" if storage else "")


def _error_line(trial, flags: str) -> str:  # noqa: ANN001
    """One line for a failed trial: its error, and the command that shows it in full."""
    return f"trial {trial.number} failed: {trial.user_attrs.get('error')} (see: stabsearch trials --show {trial.number} {flags})"


def _tell(line: str) -> None:
    """A line on stderr that does not break a progress bar being drawn there."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _confirm_and_report(module, space, store, name, settings, confirm_settings, storage) -> None:  # noqa: ANN001
    from stabsearch.study.confirm import run_confirmation

    if confirm_settings.candidates:
        horizon = round(confirm_settings.stress * settings.steps)
        click.echo(f"confirming the best {confirm_settings.candidates} on {confirm_settings.seeds} new seeds at {horizon} steps", err=True)
        done = run_confirmation(module, space, store, name, settings, confirm_settings)
        click.echo(f"{done.runs} confirmation runs ({done.skipped} already done)", err=True)
        if done.interrupted:
            _ignore_interrupts()
            click.echo("interrupted: run the same command to resume the confirmation", err=True)
            sys.exit(130)
    _write_report(store, name)
    click.echo(f"next: stabsearch recommend {_study_flags(name, store, storage)}", err=True)


def _ignore_interrupts() -> None:
    """After a search or confirmation ended by SIGINT or SIGTERM: ignore any more of them until the exit."""
    import signal

    from stabsearch.study import interrupts

    if not interrupts.interrupted():  # Ctrl-C raised by user code, not a signal: leave the handlers alone
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _write_report(store, name: str) -> None:  # noqa: ANN001
    """After a run: the HTML report, and the same figures and note saved for optuna-dashboard."""
    from stabsearch.reporting.dashboard import save_to_dashboard
    from stabsearch.reporting.report import build_report, default_report_path
    from stabsearch.study.storage import load_study

    try:
        loaded = load_study(store, name)
        built = build_report(loaded, store)
        path = default_report_path(name)
        built.write(_home() / path)  # where the command started: user code may have changed the directory
        save_to_dashboard(loaded, built.figures, built.note_markdown)
    except (UsageError, OSError) as exc:
        click.echo(f"report not written: {exc}", err=True)
        return
    click.echo(f"report: {path} (figures and note saved for `stabsearch dashboard`)", err=True)


def _home() -> Path:
    """The working directory the command started in."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().obj or {}).get("home", Path.cwd()) if ctx is not None else Path.cwd()


def _precision(flag: str | None, module, device) -> str:  # noqa: ANN001
    """``--precision``, else the module's ``PRECISION``, else "32"; fp16 needs a CUDA device (its GradScaler)."""
    precision = flag or module.precision or "32"
    if precision == "fp16" and device.type != "cuda":
        where = "--precision fp16" if flag else f"{module.source}: PRECISION = 'fp16'"
        raise UsageError(f"{where}: float16 training needs a CUDA device, this run is on {device}; use bf16 there")
    return precision


def _population_for(space, precision: str, requested: int) -> int:  # noqa: ANN001
    """``requested``, or 1 with a one-line notice when the space clips gradients or the run is not float32."""
    from stabsearch.population.driver import why_not_population_space

    reason = why_not_population_space(space, precision) if requested > 1 else None
    if reason is not None:
        click.echo(f"--population {requested}: training one trial at a time instead ({reason})", err=True)
        return 1
    return requested


def _population_size(module, device, requested: int, *, force: bool = False) -> int:  # noqa: ANN001
    """``requested``, or 1 with a one-line notice when the model can't be vectorized or (unless ``force``)
    a timed population step is no faster than ``requested`` sequential steps; refuse a K that won't fit."""
    if requested == 1:
        return 1
    from stabsearch.population.driver import _one_line, max_population, measure_population_speed, why_not_vectorizable

    instead = f"--population {requested}: training one trial at a time instead"
    reason = why_not_vectorizable(module, device)
    if reason is not None:
        click.echo(f"{instead} ({reason})", err=True)
        return 1
    fits = max_population(module, device)
    if requested > fits:
        raise UsageError(f"--population {requested} does not fit in the memory of {device}: at most {fits} members fit")
    if force:
        return requested
    try:
        speed = measure_population_speed(module, device, requested)
    except Exception as exc:  # user code or the device, on a path the checks above did not take
        click.echo(f"{instead} (timing a population step failed: {_one_line(exc)})", err=True)
        return 1
    if not speed.pays:
        click.echo(f"{instead} (a population step took {speed.ratio:.2g}x the time of {requested} sequential steps; "
                   "--force-population keeps it)", err=True)
        return 1
    return requested


def _load(model: str, space_file: str | None, device: str):  # noqa: ANN202
    """Everything a run needs from the user's files, checked before any storage is opened."""
    from stabsearch.training.device import resolve_device
    from stabsearch.training.loader import load_model_module
    from stabsearch.study.space import SearchSpace, load_space_file

    module = load_model_module(model)
    space = SearchSpace().override(module.space, source=f"{module.source} SPACE")
    if space_file is not None:
        space = space.override(load_space_file(space_file), source=f"space file {space_file}")
    return module, space, resolve_device(device)


@cli.command()
@click.argument("model", metavar="MODEL")
@_study_option
@_storage_option
@click.option("--seed", type=click.IntRange(0, MAX_SEED), default=None, help="Base seed [default: the study's].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None, metavar="FILE", help="YAML file of search-space overrides.")
@_confirm_options
@click.option("--early-warning/--no-early-warning", default=True, show_default=True,
              help="Probe each run's sharpness at its end (--no-early-warning: no probe at all).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def confirm(model: str, study: str | None, storage: str | None, seed: int | None, device: str, space_file: str | None,
            confirm: int, seeds: int, stress: float, early_warning: bool, progress: bool) -> None:
    """Confirm a finished search of MODEL on new seeds at a longer horizon (resumes where it stopped)."""
    from stabsearch.study.confirm import ConfirmSettings
    from stabsearch.study.runner import SearchSettings
    from stabsearch.study.storage import open_storage, pick_study_name

    module, space, device_ = _load(model, space_file, device)
    confirm_settings = ConfirmSettings(candidates=max(1, confirm), seeds=seeds, stress=stress)
    store = open_storage(storage)
    name = pick_study_name(store, study or (module.name if module.name in store.study_names() else None))
    attrs = store.storage.get_study_user_attrs(store.storage.get_study_id_from_name(name))
    if "steps" not in attrs:
        raise UsageError(f"study {name!r} was not made by `stabsearch run`: it has no search horizon to stress")
    settings = SearchSettings(trials=0, steps=int(attrs["steps"]), seed=attrs.get("seed", 0) if seed is None else seed,
                              device=device_, progress=progress, early_warning=early_warning)
    _confirm_and_report(module, space, store, name, settings, confirm_settings, storage)


@cli.command()
@_study_option
@_storage_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--show", type=click.IntRange(min=0), default=None, metavar="N",
              help="Print everything about trial N: settings, verdict, early warning, checks, error and traceback, curve file.")
def trials(study: str | None, storage: str | None, fmt: str, show: int | None) -> None:
    """List a study's trials with their verdicts, scores and settings (or one trial in full, with --show)."""
    from stabsearch.study.records import study_records
    from stabsearch.study.storage import load_study, open_storage

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
    from stabsearch.study.records import trial_record

    if fmt == "csv":
        raise UsageError("--show prints one trial as text (the default) or with --format json, not csv")
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        count = len(study.get_trials(deepcopy=False))
        known = f"its trials are numbered 0 to {count - 1}" if count else "it has no trials yet"
        raise UsageError(f"--show {number}: study {study.study_name!r} has no trial {number} ({known})")
    trial = found[0]
    record = trial_record(trial)
    extra = {"curve_file": _curve_file(store, record), "traceback": trial.user_attrs.get("traceback"),
             "hint": trial.user_attrs.get("hint"), "stopped_slow_at": trial.user_attrs.get("stopped_slow_at")}
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
    from stabsearch.study.records import study_records
    from stabsearch.study.recommend import recommend as choose
    from stabsearch.study.storage import load_study, open_storage

    loaded = load_study(open_storage(storage), study)
    click.echo(format_recommendation(choose(study_records(loaded), loaded.study_name), fmt), nl=False)


@cli.command()
@click.argument("file", metavar="FILE")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--classes", type=click.IntRange(min=2), default=None, help="Balanced classes K: ln K is the chance loss.")
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True, help="Warmup steps (no divergence test before).")
@click.option("--lr", type=Finite(0.0, 1e6, low_open=True), default=None, help="The run's learning rate, for the advice.")
@click.option("--eps", type=Finite(0.0, 1e6, low_open=True), default=None, help="The run's Adam eps, for the advice.")
def analyze(file: str, fmt: str, classes: int | None, warmup: int, lr: float | None, eps: float | None) -> None:
    """Diagnose the loss log FILE from any run: a CSV with a loss column, or one number per line."""
    import math

    from stabsearch.analysis.loss_log import read_loss_log
    from stabsearch.analysis.diagnosis import RunFacts, diagnose, format_text
    from stabsearch.analysis.stability import analyze as analyze_curve

    log = read_loss_log(file)
    try:
        result = analyze_curve(log.losses, steps=log.steps, chance_loss=math.log(classes) if classes else None, warmup=warmup)
    except ValueError as exc:
        raise UsageError(f"{file}: {exc}") from None
    advice = diagnose(result, RunFacts(lr=lr, eps=eps))
    if fmt == "json":
        click.echo(json.dumps({"file": file, **result.to_dict(), "diagnosis": advice}, indent=2))
    else:
        click.echo(format_text(result, advice, source=file))


@cli.command()
@_storage_option
def studies(storage: str | None) -> None:
    """List the studies in a storage, with their trial counts."""
    from stabsearch.study.storage import open_storage

    store = open_storage(storage)
    summaries = store.storage.get_all_studies()
    if not summaries:
        click.echo(f"no studies in {store.shown}")
        return
    rows = []
    for s in summaries:
        states = [t.state.name for t in store.storage.get_all_trials(s._study_id, deepcopy=False)]
        rows.append({
            "study": printable(s.study_name), "trials": len(states), "complete": states.count("COMPLETE"),
            "pruned": states.count("PRUNED"), "failed": states.count("FAIL"), "running": states.count("RUNNING"),
            "model": s.user_attrs.get("model", ""),
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
    from stabsearch.reporting.report import build_report, default_report_path
    from stabsearch.study.storage import load_study, open_storage

    store = open_storage(storage)
    loaded = load_study(store, study)
    built = build_report(loaded, store)
    path = Path(output) if output else default_report_path(loaded.study_name)
    if path.is_dir():
        raise UsageError(f"--output {path}: is a directory; give a file name")
    try:
        built.write(path)
    except OSError as exc:
        raise UsageError(f"--output {path}: cannot write the report ({exc.strerror or exc})") from None
    if to_dashboard:
        from stabsearch.reporting.dashboard import save_to_dashboard

        try:
            save_to_dashboard(loaded, built.figures, built.note_markdown)
        except UsageError as exc:
            click.echo(f"not saved for the dashboard: {exc}", err=True)
    click.echo(str(path))


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
        cli.main(args=list(argv) if argv is not None else None, prog_name="stabsearch", standalone_mode=False,
                 obj={"home": Path.cwd()})
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
