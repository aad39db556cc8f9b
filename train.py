"""The seed spec's ``python train.py ...``: the same flags as ``flowerkit train``, to which this forwards."""

from flowerkit.cli import main

if __name__ == "__main__":
    main("train")
