"""The documentation: the site builds with --strict; its CLI reference is the CLI's; every shell block of
README.md and docs/ is run by a named test or marked with what it needs; every flowerkit command in them
parses with the real CLI; and the README's tour and the standalone ONNX example run."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.cli.readme_tables import GENERATED_PAGES, command_tree, listed_params, render_option_tables

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]

SHELL = {"bash", "sh", "shell", "console"}
# A block the tests do not run says so in a comment line of its own: "# needs" and one of these.
NEEDS = ("the real Flowers-102", "a CUDA GPU", "CUDA GPUs", "internet access", "Prefect server", "MLflow server",
         "minutes")
# A command-looking line in a block that is not labelled as shell (a flowerkit line: one that parses).
COMMAND_LINE = re.compile(r"^\s*(\$ |\.venv/bin/|python3? |make |prefect |pip |mkdocs |torchrun )")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    before: str  # the last non-blank line above the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = re.match(r"^(`{3,})\s*([\w+-]*)", lines[i])
        if not match:
            i += 1
            continue
        fence, lang, start = match.group(1), match.group(2), i
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            i += 1
        found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:i]), before.strip()))
        i += 1
    return found


def shell_blocks(pages: list[Path] = PAGES) -> list[Block]:
    return [b for page in pages for b in fenced_blocks(page) if b.lang in SHELL]


# --- the site -------------------------------------------------------------------------------------------------

def test_the_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link or anchor, a page missing from the nav, a missing snippet or a
    stale CLI reference (docs/hooks/generated.py) fails it."""
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    predict_page = (tmp_path / "site" / "predict" / "index.html").read_text()
    assert "custom_metadata_map" in predict_page  # the example file itself, through pymdownx.snippets
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()


def test_the_cli_reference_is_generated() -> None:
    for page in GENERATED_PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        assert render_option_tables(text) == text, f"{page} is stale: run python scripts/update_readme_options.py"


def _sections(text: str) -> dict[tuple[str, ...], str]:
    """The CLI reference's sections by command path (``## `flowerkit runs list` ``)."""
    parts = re.split(r"^#{2,4} `flowerkit((?: [\w-]+)*)`$", text, flags=re.M)
    return {tuple(parts[i].split()): parts[i + 1] for i in range(1, len(parts), 2)}


def test_the_cli_reference_lists_every_command_and_option_the_help_lists() -> None:
    """Walk the real command tree; for each command, every option name and sub-command its `--help` shows (at a
    width where nothing wraps) is in that command's section of docs/reference/cli.md."""
    sections = _sections((DOCS / "reference" / "cli.md").read_text(encoding="utf-8"))
    tree = command_tree()
    assert len(tree) > 25 and set(sections) == {path for path, _ in tree}
    for path, command in tree:
        section = sections[path]
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
        assert shown.exit_code == 0, shown.output
        names = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", shown.output)) - {"--help"}
        missing = {n for n in names if f"`{n}`" not in section and n not in section}
        assert not missing, f"flowerkit {' '.join(path)}: {sorted(missing)} not in the CLI reference"
        for param in listed_params(command):
            if param.param_type_name == "option":
                assert all(f"`{o}`" in section for o in (*param.opts, *param.secondary_opts)), param.opts
            else:
                assert f"`{param.metavar or param.name.upper()}`" in section
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                assert f"[`{name}`]" in section and name in shown.output


# --- code blocks ----------------------------------------------------------------------------------------------

def _named_tests(comment: str) -> list[str]:
    match = re.fullmatch(r"<!-- tested: (.+) -->", comment)
    return [t.strip() for t in match.group(1).split(",")] if match else []


def _test_exists(spec: str) -> bool:
    path, _, name = spec.partition("::")
    file = ROOT / path
    return bool(name) and file.is_file() and re.search(rf"^(async )?def {re.escape(name)}\(", file.read_text(),
                                                       re.M) is not None


def test_every_shell_block_is_run_by_a_test_or_marked() -> None:
    """A shell block is either preceded by `<!-- tested: tests/FILE.py::TEST, ... -->` naming tests that exist,
    or says in a comment line `# needs ...` what it needs that the tests do not have."""
    problems = []
    blocks = shell_blocks()
    for block in blocks:
        tests = _named_tests(block.before)
        marks = [line for line in block.text.splitlines() if line.strip().startswith("# needs ")]
        if tests:
            problems += [f"{block.where}: no test {t}" for t in tests if not _test_exists(t)]
        elif not any(need in mark for mark in marks for need in NEEDS):
            problems.append(f"{block.where}: neither <!-- tested: ... --> above it nor a '# needs ...' line naming "
                            f"one of {NEEDS}")
    for page in PAGES:  # the generated reference's blocks are usage lines (`flowerkit server stop`), not commands
        for block in fenced_blocks(page) if str(page.relative_to(ROOT)) not in GENERATED_PAGES else []:
            if block.lang not in SHELL and block.lang not in ("python", "yaml") and any(
                    COMMAND_LINE.match(line) or _parses(line) for line in block.text.splitlines()):
                problems.append(f"{block.where}: commands in a '{block.lang or 'unlabelled'}' block: label it bash")
    assert len(blocks) > 20 and not problems, "\n".join(problems)


def flowerkit_commands(text: str) -> list[list[str]]:
    """The argv (after ``flowerkit``) of every flowerkit command in a shell block: ``flowerkit``,
    ``.venv/bin/flowerkit``, ``python -m flowerkit``, ``python train.py``/``eval.py``, ``torchrun ... -m
    flowerkit``, after ``VAR=value`` assignments, in pipelines and lists; ``...`` (elided options) dropped."""
    found = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        segment: list[str] = []
        segments = [segment]
        tokens = iter(list(lexer))
        for token in tokens:
            if token in ("|", "||", "&&", ";", "&"):
                segment = []
                segments.append(segment)
            elif token in (">", ">>", "<", "2>"):
                next(tokens, None)  # the redirection's file
            else:
                segment.append(token)
        for words in segments:
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]
            if not words:
                continue
            program, args = words[0], None
            if program in ("flowerkit", ".venv/bin/flowerkit"):
                args = words[1:]
            elif re.search(r"(^|/)python3?$", program) and words[1:3] == ["-m", "flowerkit"]:
                args = words[3:]
            elif re.search(r"(^|/)python3?$", program) and words[1:2] in (["train.py"], ["eval.py"]):
                args = [words[1].removesuffix(".py"), *words[2:]]
            elif program == "torchrun" and "flowerkit" in words:
                args = words[words.index("flowerkit") + 1:]
            if args:
                found.append([a for a in args if a != "..."])
    return found


def parse_with_the_cli(args: list[str]):
    """Resolve ``flowerkit ARGS`` through the real click commands and parse its options and arguments (types,
    choices, required ones), without running it; raises click's usage errors."""
    command = typer.main.get_command(app)
    ctx = command.make_context("flowerkit", list(args), resilient_parsing=False)
    while getattr(command, "commands", None):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=False)
    return ctx


def _parses(line: str) -> bool:
    """Whether ``line`` is a flowerkit command the CLI accepts (a diagram's ``flowerkit train/eval (CLI)`` is not)."""
    try:
        commands = flowerkit_commands(line) if line.lstrip().startswith("flowerkit ") else []
        return bool(commands) and all(parse_with_the_cli(args) for args in commands)
    except Exception:
        return False


def test_every_flowerkit_command_in_the_docs_parses() -> None:
    """A renamed or removed command or option, or a value of the wrong type, in any shell block of README.md,
    CONTRIBUTING.md or docs/ (marked ones included) fails here."""
    problems, count = [], 0
    for block in shell_blocks([*PAGES, ROOT / "CONTRIBUTING.md"]):
        for args in flowerkit_commands(block.text):
            count += 1
            try:
                parse_with_the_cli(args)
            except Exception as exc:  # click's UsageError and its kin
                problems.append(f"{block.where}: flowerkit {shlex.join(args)}: {exc}")
    assert count > 40 and not problems, "\n".join(problems)


def test_the_parser_catches_a_renamed_option() -> None:
    with pytest.raises(Exception, match="No such option"):
        parse_with_the_cli(flowerkit_commands("flowerkit train --name a --num_stepz 3")[0])
    assert parse_with_the_cli(flowerkit_commands("python train.py --name a --num-steps 3")[0]).params["num_steps"] == 3


def _makefile_demo_commands() -> list[list[str]]:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ndemo: setup\n", 1)[1].split("\n\n", 1)[0]
    recipe = recipe.replace("$(BIN)/flowerkit", "flowerkit").replace("$(DEMO)", "demo-20250101-120000")
    return flowerkit_commands(re.sub(r"^\t", "", recipe, flags=re.M))


def test_make_demo_commands_parse() -> None:
    """`make demo` (README, Getting started) trains, evaluates and lists: its commands parse with the real CLI.
    The demo's training recipe is the README tour's, which test_the_readme_tour_runs runs."""
    commands = _makefile_demo_commands()
    assert [c[0] for c in commands] == ["train", "eval", "runs"]
    for args in commands:
        parse_with_the_cli(args)
    demo = parse_with_the_cli(commands[0]).params
    tour = parse_with_the_cli(flowerkit_commands(_readme_tour())[1]).params
    for option in ("model_type", "img_size", "num_steps", "eval_every", "train_batch_size", "learning_rate"):
        assert demo[option] == tour[option], option


def _readme_tour() -> str:
    text = README.read_text(encoding="utf-8").split("## A ten-line tour", 1)[1]
    return text.split("```bash\n", 1)[1].split("```", 1)[0]


# What the tour test appends to the README's commands to make them seconds long (a later option wins).
TOUR_SHRINK = {
    ("data", "synth"): ["--images_per_class", "3", "--size", "96"],
    ("train",): ["--num_steps", "2", "--eval_every", "2", "--train_batch_size", "8", "--eval_batch_size", "32",
                 "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny"],
    ("eval",): ["--eval_batch_size", "32", "--tiny_infer_subset", "flower102_tiny"],
}
TOUR_NOT_RUN = (("dashboard",), ("server", "start"))  # interactive, and a background server: parsed only


def test_the_readme_tour_runs(prefect_harness, workdir: Path) -> None:
    """The README's ten-line tour as written, in an empty folder, with a smaller data set and fewer steps
    appended (TOUR_SHRINK); Getting started shows the same block."""
    tour = _readme_tour()
    assert len(tour.splitlines()) <= 10
    assert f"```bash\n{tour}```" in (DOCS / "getting-started.md").read_text(encoding="utf-8")
    commands = flowerkit_commands(tour)
    outputs = {}
    for args in commands:
        path = next(p for p in (tuple(args[:2]), tuple(args[:1])) if p in (*TOUR_SHRINK, *TOUR_NOT_RUN,
                                                                           ("predict",), ("runs",)))
        parse_with_the_cli(args)
        if path in TOUR_NOT_RUN:
            continue
        result = CliRunner().invoke(app, [*args, *TOUR_SHRINK.get(path, [])])
        assert result.exit_code == 0, f"flowerkit {shlex.join(args)}:\n{result.output}"
        outputs[path] = result.output
    assert set(outputs) == {("data", "synth"), ("train",), ("eval",), ("predict",), ("runs",)}
    assert (workdir / "output" / "tour" / "checkpoints" / "best.bin").is_file()
    assert (workdir / "output" / "tour-test" / "run_record.json").is_file()
    assert "2 of 2 image(s) predicted" in " ".join(outputs[("predict",)].split())
    assert "tour-test" in outputs[("runs",)]


def test_the_sweep_file_shown_expands(tmp_path: Path) -> None:
    """The Sweeps page's example file is a valid sweep: 2 x 2 grid points, 2 random draws each."""
    from flowerkit.sweep import read_sweep

    page = (DOCS / "sweeps.md").read_text(encoding="utf-8")
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "lr-seed.yaml").write_text(example)
    sweep = read_sweep(tmp_path / "lr-seed.yaml")
    assert sweep.name == "lr-seed" and len(sweep.trials) == 8
    assert {t.config.learning_rate for t in sweep.trials} == {0.001, 0.003}


# --- the standalone ONNX example ------------------------------------------------------------------------------

EXAMPLE = DOCS / "examples" / "onnx_predict.py"


def test_the_onnx_example_needs_only_onnxruntime_pillow_and_numpy() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"json", "sys", "numpy", "onnxruntime", "PIL"}


def test_the_onnx_example_gives_what_flowerkit_predict_gives(small_run: Path, tmp_path: Path) -> None:
    """docs/examples/onnx_predict.py, run as a script on an export of a trained run, gives the top-1 class and
    probability `flowerkit predict --run` gives for the same photos: the run's own JPEGs, a transparent PNG and
    a JPEG stored sideways with an EXIF rotation."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is part of the dev install (make setup)")
    from PIL import Image

    model = tmp_path / "small.onnx"
    exported = CliRunner().invoke(app, ["export", "small", "--output_dir", str(small_run.parent), "--format",
                                        "onnx", "--out", str(model)])
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in (small_run / "fiftyone" / "predictions.jsonl").read_text().splitlines()]
    photos = [row["filepath"] for row in rows]
    with Image.open(photos[0]) as im:
        rgba = im.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
        rgba.save(tmp_path / "transparent.png")
        exif = Image.Exif()
        exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
        im.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    photos += [str(tmp_path / "transparent.png"), str(tmp_path / "sideways.jpg")]

    done = subprocess.run([sys.executable, str(EXAMPLE), str(model), *photos], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    example = [line.split("\t") for line in done.stdout.splitlines()]
    predicted = CliRunner().invoke(app, ["predict", *photos, "--run", "small", "--output_dir", str(small_run.parent),
                                         "--json"])
    assert predicted.exit_code == 0, predicted.output
    flowerkit_rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [row[0] for row in example] == photos == [r["filepath"] for r in flowerkit_rows]
    assert [int(row[1]) for row in example] == [r["prediction"] for r in flowerkit_rows]
    assert [row[2] for row in example] == [r["prediction_name"] for r in flowerkit_rows]
    assert [float(row[3]) for row in example] == pytest.approx([r["confidence"] for r in flowerkit_rows], abs=1e-4)


# --- the README, the pages' facts -----------------------------------------------------------------------------

def test_the_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 150
    for page in (README, ROOT / "CONTRIBUTING.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not re.match(r"[a-z]+://", target):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_home_page_names_every_task_the_flows_run() -> None:
    from flowerkit.tasks import FLOW_TASKS

    text = " ".join((DOCS / "index.md").read_text(encoding="utf-8").split())
    tasks = {name for flow in ("train", "eval") for name in FLOW_TASKS[flow]}  # the sentence is about those
    assert len(tasks) == 8 and "made of eight small tasks" in text and "eight small tasks" in README.read_text()
    assert all(f"`{name}`" in text.split("## Where to start")[0] for name in tasks)


def test_artifacts_doc_shows_the_metrics_rows_a_run_writes(tiny_run: Path) -> None:
    doc = (DOCS / "artifacts.md").read_text()
    documented = {row["kind"]: set(row) for row in map(json.loads, re.findall(r'^\{"kind".*\}$', doc, re.M))}
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    written = {kind: set().union(*(set(r) for r in rows if r["kind"] == kind)) for kind in ("train", "eval")}
    assert documented == written


def test_the_performance_figures_name_the_date_of_their_raw_results() -> None:
    """Each row of the figures table that names a raw result gives the UTC day the JSON file records."""
    page = (DOCS / "performance.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\|.*\| CPU-2 \| (\d{4}-\d\d-\d\d) \| `(benchmarks/results/[\w.-]+\.json)` \|$", page, re.M)
    assert len(rows) >= 14
    for day, path in rows:
        data = json.loads((ROOT / path).read_text())
        stamp = data.get("created_utc") or data.get("started_utc")
        assert stamp and stamp.startswith(day), (path, stamp, day)
    named = {path for _, path in rows}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    assert named == on_disk, f"add to the figures table of docs/performance.md: {sorted(on_disk - named)}"
