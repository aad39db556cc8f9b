"""Google's published ViT ``.npz`` checkpoints (gs://vit_models) and ``flowerkit weights download``'s logic.

Paths are those of the original ViT release (``imagenet21k/``, ``imagenet21k+imagenet2012/``) and, for the
Ti/16 and S/16 sizes it never published, of the "How to train your ViT" (augreg) release, as timm names them.
Google publishes no checksums: a download is verified by reading it as a checkpoint of the named model, and
its sha256 is reported (and recorded in the env stamp of every run that uses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flowerkit.errors import ConfigError
from flowerkit.io.fetch import fetch

BUCKET = "https://storage.googleapis.com/vit_models/"
VARIANTS = ("imagenet21k", "imagenet21k+imagenet2012")
_AUGREG = "augreg/{size}-i21k-300ep-lr_0.001-aug_{aug}-wd_0.03-do_0.0-sd_0.0"
_AUGREG_FT = "--imagenet2012-steps_20k-lr_0.03-res_224"


def _original(name: str, fine_tuned: bool = True) -> dict[str, str]:
    published = {"imagenet21k": f"imagenet21k/{name}.npz"}
    if fine_tuned:
        published["imagenet21k+imagenet2012"] = f"imagenet21k+imagenet2012/{name}.npz"
    return published


def _augreg(size: str, aug: str) -> dict[str, str]:
    stem = _AUGREG.format(size=size, aug=aug)
    return {"imagenet21k": f"{stem}.npz", "imagenet21k+imagenet2012": f"{stem}{_AUGREG_FT}.npz"}


# model type -> variant -> path under the bucket
PUBLISHED: dict[str, dict[str, str]] = {
    "ViT-Ti_16": _augreg("Ti_16", "none"),
    "ViT-S_16": _augreg("S_16", "light1"),
    "ViT-B_16": _original("ViT-B_16"),
    "ViT-B_32": _original("ViT-B_32"),
    "ViT-L_16": _original("ViT-L_16"),
    "ViT-L_32": _original("ViT-L_32"),
    "ViT-H_14": _original("ViT-H_14", fine_tuned=False),
}


@dataclass(frozen=True)
class Fetched:
    model_type: str
    variant: str
    url: str
    path: Path
    sha256: str
    action: str  # "downloaded" or "already there"


def published_variants(model_type: str, variant: str) -> list[str]:
    """The variants to fetch for ``variant`` ("all" or one name); a ConfigError for what was never published."""
    if model_type not in PUBLISHED:
        raise ConfigError(f"Google publishes no .npz for '{model_type}'. Published: {', '.join(PUBLISHED)}. For "
                          "other models pass a timm checkpoint to --pretrained (e.g. hf-hub:timm/...).")
    available = list(PUBLISHED[model_type])
    if variant == "all":
        return available
    if variant not in available:
        raise ConfigError(f"--variant {variant}: Google publishes {model_type} as {', '.join(available)} only.")
    return [variant]


def download_google_npz(model_type: str, variant: str, out: Path, mirror: str | None = None) -> Fetched:
    """Fetch one published checkpoint to OUT/VARIANT/MODEL_TYPE.npz, resumable, verified by reading it."""
    from flowerkit.models.npz import check_npz_matches, read_npz
    from flowerkit.models.weights import file_sha256

    base = (mirror or BUCKET).rstrip("/") + "/"
    url, dest = base + PUBLISHED[model_type][variant], Path(out).expanduser() / variant / f"{model_type}.npz"

    def verify(path: Path) -> None:
        # A truncated or foreign file cannot be read as this model's checkpoint; the error names the URL.
        try:
            check_npz_matches(read_npz(path), path, model_type)
        except ConfigError as exc:
            raise ConfigError(f"{url} failed verification: {exc.message}") from None

    if dest.is_file():
        verify(dest)
        return Fetched(model_type, variant, url, dest, file_sha256(dest), "already there")
    fetch(url, dest, verify)
    return Fetched(model_type, variant, url, dest, file_sha256(dest), "downloaded")
