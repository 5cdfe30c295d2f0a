"""``python -m envoykit.cli`` (same as the ``envoykit`` command)."""

from . import main

main()
