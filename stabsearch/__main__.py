"""``python -m stabsearch``: the same as the ``stabsearch`` command."""

from stabsearch.cli import main

main()
