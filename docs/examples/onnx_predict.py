"""Classify photos with a model written by `flowerkit export --format onnx`, using onnxruntime, Pillow and
NumPy alone (no torch, no flowerkit):

    python onnx_predict.py MODEL.onnx PHOTO [PHOTO ...]

It prints one line per photo: the path, the top-1 class id and name, and its probability, tab-separated.
The export carries what a server needs in its metadata: the class names and the evaluation transform
(the side D of the uint8 square each photo is decoded to; the resize to the model's input size and the
normalisation are inside the graph). Decoding below is flowerkit's own, for ordinary photos: the EXIF
orientation applied, transparency composited on white. (`flowerkit predict --onnx` also scales 16-bit
images instead of clipping them and reads HEIC with pillow-heif.)
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def decode(path, transform):
    """One photo as the (D, D, 3) uint8 RGB square the model's input `pixels` takes."""
    cached = transform["kind"] == "cached"  # the run's pipeline: a decoded-pixel cache of side `resolution`
    side = transform["resolution"] if cached else transform["img_size"]
    with Image.open(path) as im:
        im.seek(0)  # an animated GIF or WebP: its first frame
        if cached:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, as the run's cache was built
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or im.mode == "P" and "transparency" in im.info:
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))
        im = im.convert("RGB")
        if cached:
            return np.asarray(im.resize((side, side), Image.BILINEAR, reducing_gap=3.0))
        return np.asarray(im.resize((side, side), Image.BILINEAR))


def main(model_path, photos):
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["flowerkit.class_names"])
    transform = json.loads(meta["flowerkit.eval_transform"])
    pixels = np.stack([decode(photo, transform) for photo in photos])
    logits = session.run(None, {"pixels": pixels})[0]
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    for photo, p in zip(photos, probabilities):
        top = int(p.argmax())
        print(f"{photo}\t{top}\t{classes[top]}\t{p[top]:.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
