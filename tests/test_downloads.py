"""`flowerkit data download` / `data check` against a real HTTP server on 127.0.0.1.

The server serves a generated Flowers-102 in the official file formats (102flowers.tgz holding jpg/,
imagelabels.mat, setid.mat). The official md5 table is used wherever the command runs as a user runs it;
the good-path tests pass the generated files' md5s through the same parameter.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.data.check import check_flowers102
from flowerkit.data.download import OFFICIAL_MD5, download_flowers102
from flowerkit.errors import ConfigError, MissingInputError
from tests.localhttp import LocalServer

runner = CliRunner()
NAMES = ("102flowers.tgz", "imagelabels.mat", "setid.mat")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The three official files, made from a tiny synthetic set (3 images per class, 16 px: one each for train,
    val and test, since `data check` refuses an empty split as train does)."""
    from flowerkit.data.synth import SynthSpec, generate

    root = generate(tmp_path_factory.mktemp("synth") / "flowers", SynthSpec(images_per_class=3, size=16), workers=1)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(root / "jpg", arcname="jpg")
    return {"102flowers.tgz": archive.getvalue(), "imagelabels.mat": (root / "imagelabels.mat").read_bytes(),
            "setid.mat": (root / "setid.mat").read_bytes()}


@pytest.fixture(scope="module")
def md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(data).hexdigest() for name, data in files.items()}


@pytest.fixture(scope="module")
def server(files: dict[str, bytes]):
    with LocalServer() as srv:
        for name, data in files.items():
            srv.files[f"/good/{name}"] = data
            srv.files[f"/bad/{name}"] = data if name != "setid.mat" else data[:-8] + b"garbage!"
        yield srv


def _gets(server: LocalServer, prefix: str) -> list[tuple[str, str, str | None]]:
    return [r for r in server.requests if r[0] == "GET" and r[1].startswith(prefix)]


def test_the_official_files_and_md5s_are_torchvisions() -> None:
    from torchvision.datasets import Flowers102

    from flowerkit.data.download import ARCHIVE, OFFICIAL_URL

    assert OFFICIAL_URL == Flowers102._download_url_prefix
    assert OFFICIAL_MD5 == dict(Flowers102._file_dict.values()) and ARCHIVE == Flowers102._file_dict["image"][0]


def test_download_verifies_extracts_and_is_idempotent(server: LocalServer, md5s: dict[str, str],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "flowers"
    done = download_flowers102(out, f"{server.url}/good/", md5s)
    assert [(s.name, s.action) for s in done] == [(n, "downloaded") for n in NAMES] + [("jpg/", "extracted")]
    report = check_flowers102(out, md5s)
    assert report.ok and report.images == 306 and report.verified == list(NAMES)
    assert sorted(p.name for p in out.iterdir()) == sorted([*NAMES, "jpg"])  # no partial or staging leftovers

    before = len(server.requests)
    again = download_flowers102(out, f"{server.url}/good/", md5s)
    assert [s.action for s in again] == ["verified"] * 3 and len(server.requests) == before


def test_wrong_bytes_are_refused_and_leave_nothing(server: LocalServer, md5s: dict[str, str],
                                                   tmp_path: Path) -> None:
    out = tmp_path / "flowers"
    with pytest.raises(ConfigError) as err:
        download_flowers102(out, f"{server.url}/bad/", md5s)
    message = err.value.message
    assert "setid.mat" in message and md5s["setid.mat"] in message and "got " in message
    assert not (out / "setid.mat").exists() and not (out / "setid.mat.partial").exists()


def test_cli_verifies_against_the_official_md5s(server: LocalServer, files: dict[str, bytes],
                                                tmp_path: Path) -> None:
    """Through the CLI, a mirror serving anything but the official bytes fails: exit 2, named, nothing kept."""
    out = tmp_path / "flowers"
    result = runner.invoke(app, ["data", "download", "--out", str(out), "--mirror", f"{server.url}/good"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    actual = hashlib.md5(files["102flowers.tgz"]).hexdigest()
    assert f"expected md5 {OFFICIAL_MD5['102flowers.tgz']}, got {actual}" in text and "Traceback" not in text
    assert list(out.iterdir()) == []


def test_dropped_connection_is_retried_and_the_result_verified(server: LocalServer, md5s: dict[str, str],
                                                               tmp_path: Path) -> None:
    """The server cuts the archive off mid-file once: the download is retried and only then verified."""
    server.drop_once["/good/102flowers.tgz"] = 5000
    before = len(_gets(server, "/good/102flowers.tgz"))
    out = tmp_path / "flowers"
    download_flowers102(out, f"{server.url}/good/", md5s)
    assert len(_gets(server, "/good/102flowers.tgz")) == before + 2  # the cut request, then a complete one
    assert check_flowers102(out, md5s).ok


def test_interrupted_download_resumes_on_the_next_call(server: LocalServer, files: dict[str, bytes],
                                                       md5s: dict[str, str], tmp_path: Path) -> None:
    """A previous process left a partial file: the next call asks only for the rest."""
    out = tmp_path / "flowers"
    out.mkdir()
    (out / "imagelabels.mat.partial").write_bytes(files["imagelabels.mat"][:100])
    download_flowers102(out, f"{server.url}/good/", {"imagelabels.mat": md5s["imagelabels.mat"]})
    assert ("GET", "/good/imagelabels.mat", "bytes=100-") in server.requests
    assert (out / "imagelabels.mat").read_bytes() == files["imagelabels.mat"]


def test_a_bad_partial_restarts_cleanly_and_a_missing_file_leaves_nothing(server: LocalServer,
                                                                           md5s: dict[str, str],
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "flowers"
    out.mkdir()
    (out / "setid.mat.partial").write_bytes(b"x" * 50)  # not a prefix of the real file
    one = {"setid.mat": md5s["setid.mat"]}
    with pytest.raises(ConfigError, match="failed verification"):
        download_flowers102(out, f"{server.url}/good/", one)
    assert list(out.iterdir()) == []  # the bad bytes are gone, so the next call starts over
    assert download_flowers102(out, f"{server.url}/good/", one)[0].action == "downloaded"
    with pytest.raises(MissingInputError, match="404"):
        download_flowers102(tmp_path / "other", f"{server.url}/nothing-here/", one)
    assert list((tmp_path / "other").iterdir()) == []


def test_data_check_reports_each_problem(server: LocalServer, md5s: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "flowers"
    download_flowers102(out, f"{server.url}/good/", md5s)
    (out / "jpg/image_00003.jpg").unlink()
    (out / "jpg/image_00007.jpg").write_bytes((out / "jpg/image_00007.jpg").read_bytes()[:40])
    report = check_flowers102(out, md5s)
    assert len(report.problems) == 2
    assert "1 of 306 labelled images are missing" in report.problems[0] and "image_00003" in report.problems[0]
    assert "do not decode" in report.problems[1] and "image_00007" in report.problems[1]

    result = runner.invoke(app, ["data", "check", str(out)])  # the official md5s: the archive is not official
    assert result.exit_code == 3  # an image is missing: train's code for a missing input
    text = " ".join(result.output.split())
    assert f"expected md5 {OFFICIAL_MD5['102flowers.tgz']}" in text and "image_00003" in text
    assert text.count("Error:") == 5  # one paragraph per problem: 3 unofficial files, missing, undecodable
    assert runner.invoke(app, ["data", "check", str(tmp_path / "none")]).exit_code == 3  # as train's --data_root


def test_weights_download_verifies_reports_sha256_and_refuses_a_truncated_file(server: LocalServer,
                                                                              tmp_path: Path) -> None:
    import numpy as np

    from flowerkit.models.configs import get_config
    from flowerkit.models.google import PUBLISHED
    from tests.test_models import google_npz

    weights = google_npz(get_config("ViT-Ti_16"), grid=2, rng=np.random.default_rng(0))
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.astype(np.float32) for k, v in weights.items()})
    data = buffer.getvalue()
    published = PUBLISHED["ViT-Ti_16"]
    server.files[f"/bucket/{published['imagenet21k']}"] = data
    server.files[f"/bucket/{published['imagenet21k+imagenet2012']}"] = data[: len(data) // 2]
    out, mirror = tmp_path / "weights", f"{server.url}/bucket"

    result = runner.invoke(app, ["weights", "download", "ViT-Ti_16", "--out", str(out), "--mirror", mirror])
    assert result.exit_code == 0, result.output
    saved = out / "imagenet21k" / "ViT-Ti_16.npz"
    assert saved.read_bytes() == data and hashlib.sha256(data).hexdigest() in result.output
    gets = len(server.requests)
    again = runner.invoke(app, ["weights", "download", "ViT-Ti_16", "--out", str(out), "--mirror", mirror])
    assert again.exit_code == 0 and "already there" in again.output and len(server.requests) == gets

    bad = runner.invoke(app, ["weights", "download", "ViT-Ti_16", "--variant", "imagenet21k+imagenet2012",
                              "--out", str(out), "--mirror", mirror])
    assert bad.exit_code == 2 and "failed verification" in " ".join(bad.output.split()), bad.output
    assert not any((out / "imagenet21k+imagenet2012").iterdir())  # neither the file nor a partial is kept


def _documented_weights_mirror() -> dict[str, dict[str, str]]:
    """The weights-mirror table of docs/fine-tuning.md (Mirrors): model -> variant -> path in the mirror."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "fine-tuning.md").read_text()
    table = text.split("<!-- weights-mirror -->")[1].split("<!-- /weights-mirror -->")[0]
    found = {}
    for line in table.strip().splitlines()[2:]:
        model, pretrained, fine_tuned = (cell.strip().strip("`") for cell in line.strip("|").split("|"))
        found[model] = {k: v for k, v in (("imagenet21k", pretrained), ("imagenet21k+imagenet2012", fine_tuned))
                        if v != "-"}
    return found


def test_documented_weights_mirror_served_by_python_http_server(tmp_path: Path) -> None:
    """The documented mirror layout (docs/fine-tuning.md), served by `python -m http.server --bind 127.0.0.1`, for
    the documented command."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import numpy as np

    from flowerkit.models.configs import get_config
    from flowerkit.models.google import PUBLISHED
    from tests.test_models import google_npz

    layout = _documented_weights_mirror()
    assert layout == PUBLISHED  # the documented paths are the ones the command requests
    buffer = io.BytesIO()
    weights = google_npz(get_config("ViT-Ti_16"), grid=2, rng=np.random.default_rng(1))
    np.savez(buffer, **{k: v.astype(np.float32) for k, v in weights.items()})
    mirror = tmp_path / "mirror"
    for path in layout["ViT-Ti_16"].values():
        (mirror / path).parent.mkdir(parents=True, exist_ok=True)
        (mirror / path).write_bytes(buffer.getvalue())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(mirror)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "http.server did not start"
                time.sleep(0.1)
        out = tmp_path / "weights"
        result = runner.invoke(app, ["weights", "download", "ViT-Ti_16", "--variant", "all", "--out", str(out),
                                     "--mirror", f"http://127.0.0.1:{port}"])
    finally:
        server.terminate()
        server.wait(10)
    assert result.exit_code == 0, result.output
    for variant in layout["ViT-Ti_16"]:
        assert (out / variant / "ViT-Ti_16.npz").read_bytes() == buffer.getvalue()
    assert hashlib.sha256(buffer.getvalue()).hexdigest() in result.output
