"""The Python API: what each ``stabsearch`` command does, as a function.

- :func:`search`: ``stabsearch run``, the search, its confirmation and the report;
- :func:`confirm`: ``stabsearch confirm``, the confirmation of a finished search;
- :func:`recommend`: ``stabsearch recommend``, the recommended settings and their evidence;
- :func:`report`: ``stabsearch report``, the HTML report;
- :func:`analyze`: ``stabsearch analyze``, the stability analysis of one loss curve.

They take the command line's defaults and make its checks: bad input raises
:class:`~stabsearch.errors.UsageError` with the line the command prints, before
any study is opened. Lines the command prints on stderr while it works (a
population fallback, the confirmation's progress, where the report went) go to
``log``, by default stderr too. The command line only parses its options, calls
these and prints.

Nothing heavy is imported here: :func:`analyze` of an array loads no torch,
Optuna, plotly or pandas.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stabsearch.config import PRECISIONS
from stabsearch.errors import UsageError

if TYPE_CHECKING:
    import torch
    from optuna.trial import FrozenTrial

    from stabsearch.analysis.options import StabilityOptions
    from stabsearch.analysis.verdict import Analysis
    from stabsearch.study.confirm import ConfirmSettings, ConfirmSummary
    from stabsearch.study.recommend import Recommendation
    from stabsearch.study.runner import SearchSettings, SearchSummary
    from stabsearch.study.space import SearchSpace
    from stabsearch.study.storage import Storage
    from stabsearch.training.loader import ModelModule

#: Largest ``seed``: seeds derived from it (the sampler's, confirmation runs') stay below numpy's 2**32.
MAX_SEED = 2**31 - 1
#: The bounds of the numeric arguments of :func:`search` and :func:`confirm`, which the command line's
#: options read too: name -> (lowest, highest or None, whether the lowest itself is excluded).
LIMITS: dict[str, tuple[float, float | None, bool]] = {
    "trials": (1, 1_000_000, False), "steps": (1, 10**12, False), "seed": (0, MAX_SEED, False),
    "population": (1, 1024, False), "workers": (1, None, False),
    "confirm": (0, 100, False), "seeds": (1, 100, False), "stress": (1.0, 100.0, False),
    "timeout": (0.0, 1e8, True), "trial_timeout": (0.0, 1e8, True),
    "warning_penalty": (0.0, 100.0, False), "heartbeat": (0.01, 3600.0, False),
}
#: Steps per trial when neither ``steps`` nor the module's ``STEPS`` says.
DEFAULT_STEPS = 1000
#: Training precisions: float32, bfloat16 autocast, float16 autocast with a GradScaler.

#: How a :func:`search` or :func:`confirm` ended.
Outcome = Literal["complete", "interrupted", "failed", "timed out", "worker errors"]
#: Hears each line of progress and notice (one line, no newline).
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a :func:`search` or :func:`confirm` call did.

    Attributes:
        study: The study's name.
        storage: Its storage, as shown (a password hidden).
        outcome: ``complete``; ``interrupted`` (Ctrl-C or SIGTERM: the running trial was re-queued, and the
            same call resumes); ``failed`` (every trial this call trained failed); ``timed out`` (``timeout``
            reached: the same call continues); ``worker errors`` (a worker process died on its own).
        search: The search's summary (``None`` for :func:`confirm`).
        confirmation: The confirmation's summary (``None`` when it did not run).
        recommendation: The recommended settings (``None`` when there is none yet; see ``no_recommendation``).
        no_recommendation: Why there is no recommendation, when there is none.
        report: The HTML report written (``None`` when not asked for, not reached or not written).
    """

    study: str
    storage: str
    outcome: Outcome
    search: SearchSummary | None = None
    confirmation: ConfirmSummary | None = None
    recommendation: Recommendation | None = None
    no_recommendation: str | None = None
    report: Path | None = None

    @property
    def interrupted(self) -> bool:
        return self.outcome == "interrupted"


def search(
    model: str | ModelModule,
    *,
    study: str | None = None,
    storage: str | None = None,
    trials: int = 20,
    steps: int | None = None,
    seed: int = 0,
    device: str = "auto",
    space: str | Path | Mapping[str, Any] | SearchSpace | None = None,
    population: int = 1,
    force_population: bool = False,
    workers: int = 1,
    confirm: int = 3,
    seeds: int = 3,
    stress: float = 2.0,
    timeout: float | None = None,
    trial_timeout: float | None = None,
    warning_penalty: float = 1.0,
    early_warning: bool = True,
    stop_slow: bool = True,
    precision: str | None = None,
    heartbeat: float = 10.0,
    progress: bool = True,
    report: bool = True,
    on_error: Callable[[FrozenTrial], None] | None = None,
    log: Log | None = None,
) -> SearchResult:
    """Search Adam's settings for a model module, confirm the best on new seeds, write the report.

    What ``stabsearch run`` does. The study is created, or resumed when it exists:
    ``trials`` is the number of finished search trials it should have.

    Args:
        model: A model module: the path of a ``.py`` file, a module name, or one loaded by
            :func:`~stabsearch.training.loader.load_model_module`.
        study: The study's name [default: the model module's name].
        storage: An SQLAlchemy URL or ``journal:PATH`` [default: ``sqlite:///studies/stabsearch.db``].
        trials: Finished search trials the study should have, 1 to 1,000,000.
        steps: Steps per trial [default: the module's ``STEPS``, else 1000].
        seed: Seeds the sampler, the model and the data, 0 to 2**31 - 1.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        space: Search-space overrides on top of the module's ``SPACE``: a YAML file's path, a mapping,
            or a whole :class:`~stabsearch.study.space.SearchSpace`.
        population: Train this many trials at once as one vectorized population (1 to 1024), if a timed
            step says it is faster; falls back to 1 with a notice where it cannot.
        force_population: Keep ``population`` even where its timed step is slower.
        workers: Worker processes sharing the study, at most two per CPU core.
        confirm: How many of the best configurations to confirm on new seeds (0: none), 0 to 100.
        seeds: New seeds each confirmed configuration is re-run on, 1 to 100.
        stress: Confirmation horizon in multiples of ``steps``, 1 to 100.
        timeout: Seconds after which the search stops (the running trial is re-queued).
        trial_timeout: Seconds one trial may train before it ends FAIL "timed out".
        warning_penalty: Decades added to the score of a trial predicted to blow up later (0: off), 0 to 100.
        early_warning: Probe each trial's sharpness at its end and warn of a later eps blow-up.
        stop_slow: Stop a search trial slower than the median of the finished ones.
        precision: ``"32"``, ``"bf16"`` or ``"fp16"`` [default: the module's ``PRECISION``, else ``"32"``].
        heartbeat: Seconds between a running trial's heartbeats, 0.01 to 3600.
        progress: Show progress bars.
        report: Write the HTML report (``studies/<study>.html`` under the current directory) and save its
            figures for optuna-dashboard.
        on_error: Hears the first trial that fails with an error [default: a line on stderr naming it].
        log: Hears each progress and notice line [default: stderr].

    Returns:
        A :class:`SearchResult`.

    Example:
        >>> import stabsearch, tempfile
        >>> tmp = tempfile.mkdtemp()
        >>> result = stabsearch.search("objectives/softmax_chance.py", trials=2, steps=60, confirm=1, seeds=1,
        ...                            storage=f"sqlite:///{tmp}/s.db", progress=False, report=False,
        ...                            log=lambda line: None)  # doctest: +SKIP
        >>> result.outcome, result.search.finished  # doctest: +SKIP
        ('complete', 2)
        >>> stabsearch.search("objectives/softmax_chance.py", trials=0)
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: trials=0: must be an integer from 1 to 1000000
    """
    log = log or _stderr
    _check_int("trials", trials)
    _check_int("steps", steps, optional=True)
    _check_int("seed", seed)
    _check_int("population", population)
    _check_int("workers", workers)
    _check_confirm(confirm, seeds, stress)
    _check_number("timeout", timeout, optional=True)
    _check_number("trial_timeout", trial_timeout, optional=True)
    _check_number("warning_penalty", warning_penalty)
    _check_number("heartbeat", heartbeat)
    if precision is not None and precision not in PRECISIONS:
        raise UsageError(f"precision={precision!r}: must be one of {', '.join(map(repr, PRECISIONS))}")
    if force_population and population == 1:
        raise UsageError("--force-population: give --population K (K >= 2) too")

    from stabsearch.inputs import check_name
    from stabsearch.study.confirm import ConfirmSettings
    from stabsearch.study.runner import SearchSettings, open_context, run_search
    from stabsearch.study.storage import open_storage

    home = Path.cwd()  # where the call started: user code may change the directory
    module, space_, device_ = load(model, space, device)
    precision = choose_precision(precision, module, device_)
    if workers > 1:
        from stabsearch.study.workers import check_workers

        check_workers(workers, device_)
    settings = SearchSettings(
        trials=trials, steps=steps or module.steps or DEFAULT_STEPS, seed=seed, timeout=timeout, trial_timeout=trial_timeout,
        device=device_, progress=progress, warning_penalty=warning_penalty, heartbeat=heartbeat,
        population=population_size(module, device_, population_for(space_, precision, population, log), log, force=force_population),
        stop_slow=stop_slow, early_warning=early_warning, precision=precision, no_decay=module.no_decay,
    )
    name = check_name(study) if study is not None else module.name
    store = open_storage(storage, create=True)
    log(f"study {name!r} in {store.shown}: {settings.trials} trials of {settings.steps} steps on {settings.device}")
    if on_error is None:
        from stabsearch.study.trial_attrs import ERROR

        flags = study_flags(name, store.shown if storage else None)
        on_error = lambda trial: _tell(f"trial {trial.number} failed: {trial.user_attrs.get(ERROR)} "  # noqa: E731
                                       f"(see: stabsearch trials --show {trial.number} {flags})")
    if workers > 1:
        from stabsearch.study.workers import run_workers

        summary = run_workers(workers, module.source, open_context(module, space_, store, name, settings, on_error=on_error))
    else:
        summary = run_search(module, space_, store, name, settings, on_error=on_error)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none"
    log(f"{summary.finished}/{settings.trials} trials finished ({counts}); {summary.new_trials} new in {summary.seconds:.1f}s")
    for line in summary.worker_errors:
        log(f"stabsearch: error: {line}; its trial was recovered")
    ended = _search_outcome(summary)
    if ended != "complete":
        return SearchResult(name, store.shown, ended, search=summary)
    done = _confirm_and_report(module, space_, store, name, settings, ConfirmSettings(confirm, seeds, stress), report, home, log)
    return dataclasses.replace(done, search=summary)


def confirm(
    model: str | ModelModule,
    *,
    study: str | None = None,
    storage: str | None = None,
    seed: int | None = None,
    device: str = "auto",
    space: str | Path | Mapping[str, Any] | SearchSpace | None = None,
    confirm: int = 3,
    seeds: int = 3,
    stress: float = 2.0,
    early_warning: bool = True,
    progress: bool = True,
    report: bool = True,
    log: Log | None = None,
) -> SearchResult:
    """Confirm a finished search on new seeds at a longer horizon, then write the report.

    What ``stabsearch confirm`` does; it resumes where an interrupted confirmation stopped.

    Args:
        model: The model module the study searched (a path, a module name or a loaded one).
        study: The study [default: the storage's study named after the module, else its only study].
        storage: The study's storage [default: ``sqlite:///studies/stabsearch.db``].
        seed: Base seed [default: the study's].
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        space: Search-space overrides, as for :func:`search`.
        confirm: How many of the best configurations to confirm (at least 1 is), 0 to 100.
        seeds: New seeds each is re-run on, 1 to 100.
        stress: Horizon in multiples of the search's steps, 1 to 100.
        early_warning: Probe each run's sharpness at its end.
        progress: Show progress bars.
        report: Write the HTML report and save its figures for optuna-dashboard.
        log: Hears each progress and notice line [default: stderr].

    Returns:
        A :class:`SearchResult` whose ``search`` is ``None``.

    Example:
        >>> import stabsearch
        >>> stabsearch.confirm("objectives/softmax_chance.py", stress=0.5)
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: stress=0.5: must be a finite number in [1, 100]
    """
    log = log or _stderr
    _check_int("seed", seed, optional=True)
    _check_confirm(confirm, seeds, stress)
    from stabsearch.study.confirm import ConfirmSettings
    from stabsearch.study.runner import SearchSettings
    from stabsearch.study.storage import open_storage, pick_study_name

    home = Path.cwd()
    module, space_, device_ = load(model, space, device)
    confirm_settings = ConfirmSettings(candidates=max(1, confirm), seeds=seeds, stress=stress)
    store = open_storage(storage)
    name = pick_study_name(store, study or (module.name if module.name in store.study_names() else None))
    from stabsearch.study.trial_attrs import STUDY_SEED, STUDY_STEPS

    attrs = store.storage.get_study_user_attrs(store.storage.get_study_id_from_name(name))
    if STUDY_STEPS not in attrs:
        raise UsageError(f"study {name!r} was not made by `stabsearch run`: it has no search horizon to stress")
    settings = SearchSettings(trials=0, steps=int(attrs[STUDY_STEPS]), seed=attrs.get(STUDY_SEED, 0) if seed is None else seed,
                              device=device_, progress=progress, early_warning=early_warning)
    return _confirm_and_report(module, space_, store, name, settings, confirm_settings, report, home, log)


def recommend(study: str | None = None, storage: str | None = None) -> Recommendation:
    """The recommended settings of a study, with their evidence (what ``stabsearch recommend`` prints).

    Args:
        study: The study [default: the storage's only study].
        storage: The study's storage [default: ``sqlite:///studies/stabsearch.db``].

    Returns:
        The :class:`~stabsearch.study.recommend.Recommendation`; its ``evidence["confirmed"]`` says whether
        it survived confirmation on new seeds.

    Raises:
        UsageError: No such study or storage, or nothing to recommend yet
            (:class:`~stabsearch.study.recommend.NothingToRecommend`, with the reason).

    Example:
        >>> import stabsearch, tempfile
        >>> stabsearch.recommend(storage=f"sqlite:///{tempfile.mkdtemp()}/none.db")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: /.../none.db: no study database here (run `stabsearch run` first, or pass --storage)
    """
    from stabsearch.study.recommend import recommend as choose
    from stabsearch.study.trial_attrs import study_records
    from stabsearch.study.storage import load_study, open_storage

    loaded = load_study(open_storage(storage), study)
    return choose(study_records(loaded), loaded.study_name)


def report(
    study: str | None = None, storage: str | None = None, path: str | Path | None = None, *,
    dashboard: bool = True, log: Log | None = None,
) -> Path:
    """Write a study's safe-region report: one self-contained HTML file that works offline.

    Args:
        study: The study [default: the storage's only study].
        storage: The study's storage [default: ``sqlite:///studies/stabsearch.db``].
        path: The HTML file to write [default: ``studies/<study>.html`` under the current directory].
        dashboard: Also save the figures and a summary note on the study for optuna-dashboard.
        log: Hears the line saying the dashboard copy was not saved, if it was not [default: stderr].

    Returns:
        The path written.

    Example:
        >>> import stabsearch, tempfile
        >>> stabsearch.report(storage=f"sqlite:///{tempfile.mkdtemp()}/none.db")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: /.../none.db: no study database here (run `stabsearch run` first, or pass --storage)
    """
    from stabsearch.reporting.page import write_report
    from stabsearch.study.storage import load_study, open_storage

    store = open_storage(storage)
    written = write_report(load_study(store, study), store, path, dashboard=dashboard)
    if written.dashboard_error:
        (log or _stderr)(f"not saved for the dashboard: {written.dashboard_error}")
    return written.path


def analyze(
    losses: Sequence[float] | Any | str | Path,
    *,
    steps: Sequence[int] | None = None,
    chance_loss: float | None = None,
    warmup: int = 0,
    final: float | None = None,
    options: StabilityOptions | None = None,
) -> Analysis:
    """The stability analysis of one loss curve: verdict, spikes, divergence, final loss and score.

    Pure numpy: given an array it loads no torch, Optuna, plotly or pandas.

    Args:
        losses: The logged losses, oldest first (NaN and inf mean the run diverged), or the path of a
            loss log (a CSV with a ``loss`` column and optionally ``step``, or one number per line), as
            ``stabsearch analyze`` reads it.
        steps: The step of each value, strictly increasing [default: the log's ``step`` column, else 0..n-1].
        chance_loss: The loss at chance (``math.log(K)`` for K balanced classes).
        warmup: Steps during which a loss above the threshold is not divergence.
        final: A held-out loss that replaces the median of the last 5% as the final loss.
        options: Thresholds of the analysis (:class:`~stabsearch.analysis.options.StabilityOptions`).

    Returns:
        The :class:`~stabsearch.analysis.verdict.Analysis`.

    Raises:
        UsageError: A log that cannot be read, or losses the analysis refuses (naming the file, if one).

    Example:
        >>> import stabsearch
        >>> stabsearch.analyze([2.3, 1.0, 0.5, 0.2] * 30).verdict
        'stable'
        >>> stabsearch.analyze([])
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: losses is empty
    """
    from stabsearch.analysis.verdict import analyze as analyze_curve

    where = None
    if isinstance(losses, (str, Path)):
        from stabsearch.analysis.loss_log import read_loss_log

        log = read_loss_log(losses)
        where, losses, steps = str(losses), log.losses, log.steps if steps is None else steps
    try:
        return analyze_curve(losses, steps=steps, chance_loss=chance_loss, warmup=warmup, final=final, options=options)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}" if where else str(exc)) from None


# --- what the functions above share -------------------------------------------------------------------------


def load(model: str | ModelModule, space: str | Path | Mapping[str, Any] | SearchSpace | None, device: str):  # noqa: ANN201
    """The model module, the search space and the device a run needs, checked before any storage is opened.

    Returns ``(module, space, device)``: the space is the default one with the module's ``SPACE`` and then
    ``space`` (a YAML file, a mapping) applied, or ``space`` itself when it is a whole SearchSpace.
    """
    from stabsearch.study.space import SearchSpace, load_space_file
    from stabsearch.training.device import resolve_device
    from stabsearch.training.loader import ModelModule, load_model_module

    module = model if isinstance(model, ModelModule) else load_model_module(str(model))
    if isinstance(space, SearchSpace):
        searched = space
    else:
        searched = SearchSpace().override(module.space, source=f"{module.source} SPACE")
        if isinstance(space, (str, Path)):
            searched = searched.override(load_space_file(space), source=f"space file {space}")
        elif space is not None:
            searched = searched.override(space, source="space")
    return module, searched, resolve_device(str(device))


def choose_precision(flag: str | None, module: ModelModule, device: torch.device) -> str:
    """``--precision``, else the module's ``PRECISION``, else "32"; fp16 needs a CUDA device (its GradScaler)."""
    precision = flag or module.precision or "32"
    if precision == "fp16" and device.type != "cuda":
        where = "--precision fp16" if flag else f"{module.source}: PRECISION = 'fp16'"
        raise UsageError(f"{where}: float16 training needs a CUDA device, this run is on {device}; use bf16 there")
    return precision


def population_for(space: SearchSpace, precision: str, requested: int, log: Log) -> int:
    """``requested``, or 1 with a one-line notice when the space clips gradients or the run is not float32."""
    from stabsearch.population.adam import why_not_population_space

    reason = why_not_population_space(space, precision) if requested > 1 else None
    if reason is not None:
        log(f"--population {requested}: training one trial at a time instead ({reason})")
        return 1
    return requested


def population_size(module: ModelModule, device: torch.device, requested: int, log: Log, *, force: bool = False) -> int:
    """``requested``, or 1 with a one-line notice when the model can't be vectorized or (unless ``force``)
    a timed population step is no faster than ``requested`` sequential steps; refuse a K that won't fit."""
    if requested == 1:
        return 1
    from stabsearch.population.memory import max_population
    from stabsearch.population.speed import measure_population_speed
    from stabsearch.population.vectorizable import _one_line, why_not_vectorizable

    instead = f"--population {requested}: training one trial at a time instead"
    reason = why_not_vectorizable(module, device)
    if reason is not None:
        log(f"{instead} ({reason})")
        return 1
    fits = max_population(module, device)
    if requested > fits:
        raise UsageError(f"--population {requested} does not fit in the memory of {device}: at most {fits} members fit")
    if force:
        return requested
    try:
        speed = measure_population_speed(module, device, requested)
    except Exception as exc:  # user code or the device, on a path the checks above did not take
        log(f"{instead} (timing a population step failed: {_one_line(exc)})")
        return 1
    if not speed.pays:
        log(f"{instead} (a population step took {speed.ratio:.2g}x the time of {requested} sequential steps; "
            "--force-population keeps it)")
        return 1
    return requested


def study_flags(name: str, shown_storage: str | None) -> str:
    """The options that point a later command at this study, as the user would type them.

    Example:
        >>> study_flags("tiny", None), study_flags("tiny", "sqlite:///s.db")
        ('--study tiny', "--study tiny --storage 'sqlite:///s.db'")
    """
    return f"--study {name}" + (f" --storage '{shown_storage}'" if shown_storage else "")


def _search_outcome(summary: SearchSummary) -> Outcome:
    if summary.interrupted:
        return "interrupted"
    if summary.new_trials and summary.new_failed == summary.new_trials:
        return "failed"
    if summary.timed_out:
        return "timed out"
    return "worker errors" if summary.worker_errors else "complete"


def _confirm_and_report(
    module: ModelModule, space: SearchSpace, store: Storage, name: str, settings: SearchSettings,
    confirm_settings: ConfirmSettings, report: bool, home: Path, log: Log,
) -> SearchResult:
    """The confirmation (unless ``candidates`` is 0), then the report and the recommendation."""
    done = None
    if confirm_settings.candidates:
        from stabsearch.study.confirm import run_confirmation

        horizon = round(confirm_settings.stress * settings.steps)
        log(f"confirming the best {confirm_settings.candidates} on {confirm_settings.seeds} new seeds at {horizon} steps")
        done = run_confirmation(module, space, store, name, settings, confirm_settings)
        log(f"{done.runs} confirmation runs ({done.skipped} already done)")
        if done.interrupted:
            return SearchResult(name, store.shown, "interrupted", confirmation=done)
    from stabsearch.study.recommend import NothingToRecommend, recommend as choose
    from stabsearch.study.trial_attrs import study_records
    from stabsearch.study.storage import load_study

    written = _report_after_run(store, name, home, log) if report else None
    try:
        chosen, why = choose(study_records(load_study(store, name)), name), None
    except NothingToRecommend as exc:
        chosen, why = None, str(exc)
    return SearchResult(name, store.shown, "complete", confirmation=done, recommendation=chosen, no_recommendation=why,
                        report=written)


def _report_after_run(store: Storage, name: str, home: Path, log: Log) -> Path | None:
    """After a run: the HTML report, and the same figures and note saved for optuna-dashboard."""
    from stabsearch.reporting.page import default_report_path, write_report
    from stabsearch.study.storage import load_study

    path = default_report_path(name)
    try:  # written where the command started: user code may have changed the directory
        written = write_report(load_study(store, name), store, home / path)
    except (UsageError, OSError) as exc:
        log(f"report not written: {exc}")
        return None
    if written.dashboard_error:
        log(f"report: {path} (not saved for the dashboard: {written.dashboard_error})")
    else:
        log(f"report: {path} (figures and note saved for `stabsearch dashboard`)")
    return written.path


def _check_int(name: str, value: Any, *, optional: bool = False) -> None:
    low, high, _ = LIMITS[name]
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise UsageError(f"{name}={_short(value)}: must be an integer {span}")


def _check_number(name: str, value: Any, *, optional: bool = False) -> None:
    low, high, low_open = LIMITS[name]
    if value is None and optional:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > low if low_open else value >= low) or value > high:
        raise UsageError(f"{name}={_short(value)}: must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}]")


def _check_confirm(candidates: Any, seeds: Any, stress: Any) -> None:
    _check_int("confirm", candidates)
    _check_int("seeds", seeds)
    _check_number("stress", stress)


def _short(value: Any) -> str:
    from stabsearch.inputs import shorten

    return shorten(value)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _tell(line: str) -> None:
    """A line on stderr that does not break a progress bar being drawn there."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
