"""``python -m flowerkit`` is the ``flowerkit`` command."""

from flowerkit.cli import main

main()
