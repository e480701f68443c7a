"""Doctest collection of the package: an integration whose optional extra is not installed is skipped.

``pip install -e ".[dev]"`` installs both extras, so the suite runs every example; a plain install of the
package still runs ``python -m pytest`` without an import error from ``stabsearch/integrations``.
"""

import importlib.util

collect_ignore = [
    f"stabsearch/integrations/{name}.py"
    for name in ("lightning", "transformers")
    if importlib.util.find_spec(name) is None
]
