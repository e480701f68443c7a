"""optuna-dashboard integration.

Two things: :func:`save_to_dashboard` stores the report's plotly figures and a
markdown note on the study, where optuna-dashboard shows them; and
:func:`make_server` / :func:`serve` run optuna-dashboard on a storage with its
artifact store wired in, so every trial's loss-curve CSV opens from the
trial's page. The server binds to 127.0.0.1 unless told otherwise: the
dashboard has no login, and it can edit and delete studies.

Example:
    >>> import optuna, plotly.graph_objects as go
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study()
    >>> save_to_dashboard(study, {"my-figure": go.Figure()}, "**hello**")
    ['my-figure']
    >>> from optuna_dashboard import get_note
    >>> get_note(study)
    '**hello**'
"""

from __future__ import annotations

import ipaddress
import signal
import socketserver
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server as _make_wsgi_server

import optuna

from stabsearch.errors import UsageError

_INSTALL_HINT = "optuna-dashboard is not installed; install it with: pip install optuna-dashboard"


def _dashboard_module() -> Any:
    try:
        import optuna_dashboard
    except ImportError:
        raise UsageError(_INSTALL_HINT) from None
    return optuna_dashboard


def save_to_dashboard(study: optuna.Study, figures: Mapping[str, Any], note_markdown: str) -> list[str]:
    """Save ``figures`` (plotly figures keyed by id) and the study note ``note_markdown`` for optuna-dashboard.

    An id is reused on every call, so a new report replaces the old figures
    instead of piling up. The note is rewritten only when its text changed.
    Returns the graph ids. Raises :class:`~stabsearch.errors.UsageError` when
    optuna-dashboard is not installed.
    """
    dashboard = _dashboard_module()
    from optuna_dashboard._custom_plot_data import is_valid_graph_object_id

    ids = []
    for key, figure in figures.items():
        if not is_valid_graph_object_id(key):
            raise ValueError(f"figure id {key!r} is not a valid graph id (letters, digits, '-', '_', ':' and '.')")
        ids.append(dashboard.save_plotly_graph_object(study, figure, graph_object_id=key))
    if dashboard.get_note(study) != note_markdown:
        dashboard.save_note(study, note_markdown)
    return ids


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hanging browser request never blocks Ctrl-C
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per request (the dashboard polls every few seconds) would drown the terminal


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(storage: Any, host: str = "127.0.0.1", port: int = 8080) -> WSGIServer:
    """A server for optuna-dashboard on ``storage`` (a :class:`~stabsearch.study.storage.Storage`), bound but not yet serving.

    ``port`` 0 picks a free port (``server.server_port`` says which).
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number (0..65535)")
    dashboard = _dashboard_module()
    app = dashboard.wsgi(storage.storage, artifact_store=storage.artifacts)
    try:
        return _make_wsgi_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host") from None


def serve(server: WSGIServer) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM, then close the socket and return."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        def stop(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sys.stderr.flush()
