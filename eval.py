"""The seed spec's ``python eval.py ...``: the same flags as ``flowerkit eval``, to which this forwards."""

from flowerkit.cli import main

if __name__ == "__main__":
    main("eval")
