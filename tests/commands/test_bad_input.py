"""Bad input through the real command line: one stderr line naming the file (and line), exit 2.

Covers what used to end in a traceback (text files that are not UTF-8, empty or repeated YAML,
checkpoint sidecars that lack keys or no longer fit their weights, a corrupt image met while
training or scoring, output piped into a reader that stops early), what used to be accepted
silently (repeated keys and indistinguishable texts in prompt and config files), and options placed
between ``key=value`` overrides. Bad dataset label files: tests/data/test_input_edges.py; `clef
prep` refusals: tests/prep/test_prep_refusals.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clef import cli
from clef.checkpoint import save_checkpoint
from clef.cli import build_parser, main
from clef.model import build_model

REPO = Path(__file__).resolve().parents[2]
SMALL_CNN = dict(image_encoder="cnn", cnn_widths=(8, 16), cnn_depth=1, embed_dim=32)
TINY_CLIP = dict(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2)
TINY_CLIP |= dict(vision_intermediate=64, text_width=32, text_layers=1, text_heads=2, text_intermediate=64)
LATIN1 = "caf\xe9".encode("latin-1")


def one_error_line(capsys, status: int, *needles: str) -> str:
    """Assert exit status 2 and exactly one stderr line, ``clef: error: ...``, holding every needle."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("clef: error: "), (status, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------------------ config YAML
@pytest.mark.parametrize(
    "content, message",
    [
        (
            b"seed: 1\nrun_dir: " + LATIN1 + b"\n",
            "line 2: not UTF-8 text (byte 0xe9, column 13); save it as UTF-8",
        ),
        (b"seed: 1\nseed: 2\n", "line 2: key 'seed' is given twice (first on line 1)"),
        (b"engine:\n  steps: 1\n  steps: 2\n", "line 3: key 'steps' is given twice (first on line 2)"),
        (b"seed: 1\n  run_dir: x\n", "line 2: not valid YAML: mapping values are not allowed here"),
        (b"engine:\n\tsteps: 3\n", "line 2: not valid YAML: found character '\\t'"),
    ],
    ids=["latin-1", "repeated-key", "repeated-nested-key", "indentation", "tab"],
)
def test_config_files(tmp_path, capsys, content, message):
    config = write(tmp_path / "pretrain.yaml", content)
    before = config.stat().st_mtime_ns
    one_error_line(
        capsys, main(["pretrain", "--config", str(config), "--print-config"]), f"{config}, {message}"
    )
    assert config.read_bytes() == content and config.stat().st_mtime_ns == before


def test_override_with_a_repeated_key(capsys):
    status = main(["pretrain", "init.backbone_config={cnn_depth: 1, cnn_depth: 2}", "--print-config"])
    one_error_line(
        capsys, status, "override 'init.backbone_config={cnn_depth: 1, cnn_depth: 2}'", "given twice"
    )


# ---------------------------------------------------------------------------------- prompt files
@pytest.fixture(scope="module")
def activity_csv(tmp_path_factory) -> Path:
    """A generic-CSV dataset of 8 tiny images, two subjects, two activities, three folds."""
    root = tmp_path_factory.mktemp("csv")
    rows = []
    for i in range(8):
        Image.new("RGB", (32, 32), (20 * i, 90, 80)).save(root / f"{i}.png")
        rows.append(f"{i}.png,s{i % 4},T{i % 2 + 1},{i % 4 % 3 + 1}\n")
    write(root / "labels.csv", "path,subject,activity,fold\n" + "".join(rows))
    return root / "labels.csv"


PROMPTS = {
    "latin-1": (b"activities:\n  T1: " + LATIN1 + b"\n", ", line 2: not UTF-8 text (byte 0xe9"),
    "empty": (b"", ": the prompt file is empty; expected a mapping of sections"),
    "only-a-comment": (b"# nothing here\n", ": the prompt file is empty"),
    "repeated-key": (
        b"activities:\n  T1: one\n  T1: two\n",
        ", line 3: key 'T1' is given twice (first on line 2)",
    ),
    "same-activity-text": (
        b"activities:\n  T1: Telling a joke.\n  T2: telling  a joke.\n",
        ", line 3: activities: activity 'T2' has the same text as activity 'T1' (line 2)",
    ),
    "same-au-name": (
        b"base: labels\nau_names:\n  1: brow up\n  2: Brow up\n",
        ", line 4: au_names: AU2 has the same text as AU1 (line 3): 'Brow up'",
    ),
    "au-twice": (
        b"base: labels\nau_names:\n  12: smile\n  AU12: grin\n",
        ", line 4: AU12 is given twice in au_names",
    ),
    "same-expression-description": (
        b"base: labels\nexpression_descriptions:\n  anger: a frowning face\n  fear: a frowning face\n",
        ", line 4: expression_descriptions: expression 'fear' has the same text as expression 'anger'",
    ),
    "repeated-template": (
        b"base: labels\nname_templates:\n  - a face showing {}.\n  - a face showing {}.\n",
        ", line 4: name_templates: template 2 has the same text as template 1 (line 3)",
    ),
}


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompt_files(tmp_path, capsys, activity_csv, name):
    content, message = PROMPTS[name]
    prompts = write(tmp_path / "prompts.yaml", content)
    argv = ["pretrain", "data.dataset=csv", f"data.root={activity_csv}", f"prompt_set={prompts}"]
    one_error_line(capsys, main([*argv, f"run_dir={tmp_path / 'run'}"]), f"{prompts}{message}")
    assert not (tmp_path / "run").exists()


def test_a_prompt_text_equal_to_one_of_its_base_names_both_files(tmp_path, capsys, activity_csv):
    prompts = write(tmp_path / "prompts.yaml", b"base: labels\nau_names:\n  2: inner brow raiser\n")
    argv = ["pretrain", "data.dataset=csv", f"data.root={activity_csv}", f"prompt_set={prompts}"]
    line = one_error_line(
        capsys, main([*argv, f"run_dir={tmp_path / 'run'}"]), f"{prompts}, line 3: au_names: AU2"
    )
    assert "labels.yaml, line" in line and "AU1" in line


# ------------------------------------------------------------------------------ checkpoint sidecars
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(
        folder / "model", build_model("offline", SMALL_CNN, pretrained=False), labels=["happiness"]
    )
    return folder / "model", json.loads((folder / "model.json").read_text())


def edited(tmp_path: Path, checkpoint, change=None, raw: bytes | None = None) -> Path:
    """A copy of the checkpoint whose sidecar is edited in place by ``change(meta)`` (or is ``raw``)."""
    source, meta = checkpoint
    (tmp_path / "model.safetensors").write_bytes(source.with_suffix(".safetensors").read_bytes())
    meta = json.loads(json.dumps(meta))
    if change is not None:
        change(meta)
    write(tmp_path / "model.json", raw if raw is not None else json.dumps(meta))
    return tmp_path / "model"


def load_with_probe(model: Path) -> int:
    return main(["probe", str(model), "--root", str(model.parent), "--dataset", "csv", "--quiet"])


def test_sidecar_that_is_not_utf8_or_not_json(tmp_path, capsys, checkpoint):
    model = edited(
        tmp_path, checkpoint, raw=b'{"format": "clef-checkpoint",\n "labels": ["' + LATIN1 + b'"]}'
    )
    one_error_line(capsys, main(["info", str(model)]), f"{model}.json, line 2: not UTF-8 text")
    model = edited(tmp_path, checkpoint, raw=b'{"format": "clef-checkpoint",\n "labels": }')
    one_error_line(
        capsys, load_with_probe(model), f"{model}.json, line 2: not valid JSON (Expecting value, column 12)"
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("backbone"), "incomplete checkpoint sidecar: missing key(s) backbone"),
        (
            lambda m: [m.pop(k) for k in ("labels", "extra_tensors")],
            "incomplete checkpoint sidecar: missing key(s) labels, extra_tensors",
        ),
        (lambda m: m.update(backbone="offline"), "key 'backbone' is 'offline'; expected a mapping"),
        (lambda m: m["backbone"].pop("name"), "key 'backbone' is {'config'"),
        (
            lambda m: m.update(labels="happiness"),
            "key 'labels' is 'happiness'; expected a list of label names",
        ),
        (lambda m: m.update(format_version="1"), "key 'format_version' is '1'; expected an integer"),
    ],
    ids=[
        "no-backbone",
        "no-labels-no-extras",
        "backbone-string",
        "backbone-without-name",
        "labels",
        "version",
    ],
)
def test_sidecar_that_lacks_keys(tmp_path, capsys, checkpoint, change, message):
    model = edited(tmp_path, checkpoint, change)
    one_error_line(capsys, main(["info", str(model)]), f"{model}.json: {message}")
    one_error_line(capsys, load_with_probe(model), f"{model}.json: {message}")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda m: m["backbone"]["config"].update(cnn_widths=[8, 32]),
            "weights do not fit backbone 'offline' as model.json describes it: other shapes: ",
        ),
        (
            lambda m: m["backbone"].update(name="clip-vit-b16", config=TINY_CLIP),
            "weights do not fit backbone 'clip-vit-b16' as model.json describes it: missing tensors ",
        ),
        (
            lambda m: m["backbone"].update(name="resnet"),
            "unknown backbone 'resnet'; valid backbones: offline",
        ),
        (lambda m: m["backbone"]["config"].update(depth=3), "unknown key(s) depth for backbone 'offline'"),
        (
            lambda m: m.update(extra_tensors=["head.bias"]),
            "lists extra tensors [head.bias] but model.safetensors",
        ),
    ],
    ids=["other-shapes", "other-backbone", "unknown-backbone", "unknown-config-key", "extra-tensors"],
)
def test_sidecar_that_no_longer_fits_its_weights(tmp_path, capsys, checkpoint, change, message):
    model = edited(tmp_path, checkpoint, change)
    line = one_error_line(capsys, load_with_probe(model), message)
    assert f"{model}.json" in line or f"{model}.safetensors" in line


# ------------------------------------------------------------------------------- corrupt images
@pytest.fixture()
def corrupt_csv(tmp_path, activity_csv) -> Path:
    """The activity dataset with image 3 replaced by bytes that are no image."""
    root = tmp_path / "data"
    root.mkdir()
    for path in activity_csv.parent.iterdir():
        (root / path.name).write_bytes(path.read_bytes())
    (root / "3.png").write_bytes(b"this is not a PNG")
    return root / "labels.csv"


def test_corrupt_image_met_while_training_in_a_loader_worker(tmp_path, capsys, corrupt_csv):
    argv = ["pretrain", "data.dataset=csv", f"data.root={corrupt_csv}", "prompt_set=none", "data.workers=1"]
    argv += [
        "data.frames_per_activity=2",
        "data.frame_stride=1",
        "init.backbone_config={image_encoder: cnn, cnn_widths: [8, 16], image_size: 32}",
    ]
    argv += ["engine.steps=2", "engine.progress=false", f"run_dir={tmp_path / 'run'}"]
    one_error_line(capsys, main(argv), f"{corrupt_csv.parent / '3.png'}: cannot read the image of record ")


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_met_while_scoring(capsys, corrupt_csv, workers):
    argv = [
        "probe",
        "--random-init",
        "offline",
        "--backbone-config",
        "{image_encoder: cnn, cnn_widths: [8, 16], image_size: 32}",
    ]
    argv += ["--dataset", "csv", "--root", str(corrupt_csv), "--workers", str(workers), "--quiet"]
    one_error_line(capsys, main(argv), f"{corrupt_csv.parent / '3.png'}: cannot read the image of record ")


# ------------------------------------------------------------------------------------ broken pipe
class _ClosedPipe:
    """A stdout whose reader has gone away."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("argv", [["list", "backbones"], ["--help"], ["data", "check", "csv", "ROOT"]])
def test_output_into_a_closed_pipe_ends_quietly(monkeypatch, capsys, activity_csv, argv):
    argv = [str(activity_csv) if a == "ROOT" else a for a in argv]
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(argv) == cli.BROKEN_PIPE_EXIT
    assert capsys.readouterr().err == ""


def test_data_check_piped_into_head_exits_quietly(activity_csv):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `head -1` has read its line and gone: every write now fails
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-m", "clef", "data", "check", "csv", str(activity_csv), "--no-progress"]
    try:
        done = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == cli.BROKEN_PIPE_EXIT and done.stderr == b""


# ----------------------------------------------------------------------------- a bug, not bad input
def test_a_bug_keeps_its_traceback_and_says_it_is_a_bug(monkeypatch, capsys):
    from clef.commands import listing

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(listing, "run", broken)
    assert main(["list", "backbones"]) == cli.BUG_EXIT
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err
    assert err.splitlines()[-1].startswith("clef: this is a bug in clef")


# ---------------------------------------------------------------- options between key=value pairs
@pytest.mark.parametrize(
    "argv, flags",
    [
        (["finetune", "data.fold=2", "--quiet", "engine.steps=3"], {"quiet": True}),
        (
            ["finetune", "a=1", "--config", "c.yaml", "b=2", "--resume", "r/checkpoint.pt"],
            {"config": Path("c.yaml")},
        ),
        (["crossval", "a=1", "--config", "c.yaml", "b=2", "--quiet"], {"quiet": True}),
        (["pretrain", "a=1", "--print-config", "b=2", "--resume"], {"print_config": True, "resume": "auto"}),
        (["pretrain", "a=1", "--resume", "x.pt", "b=2"], {"resume": "x.pt"}),
        (["zeroshot", "expressions", "a=1", "--seen", "happiness,fear", "b=2"], {"seen": "happiness,fear"}),
        (["zeroshot", "au-to-fer", "a=1", "--fer-root", "r", "b=2", "--quiet"], {"fer_root": Path("r")}),
    ],
)
def test_options_between_overrides(argv, flags):
    args = build_parser().parse_args(argv)
    expected = ["a=1", "b=2"] if "a=1" in argv else ["data.fold=2", "engine.steps=3"]
    assert args.overrides == expected
    for name, value in flags.items():
        assert getattr(args, name) == value


def test_options_between_overrides_end_to_end(tmp_path, capsys):
    assert main(["pretrain", "seed=3", "--print-config", f"run_dir={tmp_path / 'x'}"]) == 0
    printed = capsys.readouterr().out
    assert "seed: 3" in printed and f"run_dir: {tmp_path / 'x'}" in printed
    # An unknown option is still a one-line usage error.
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "seed=3", "--bogus", "run_dir=x"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["clef: error: unrecognized arguments: --bogus (see clef --help)"]
