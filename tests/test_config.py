from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from clef.config import InvalidValue, config_to_dict, load_config, require_number, save_config
from clef.errors import UserError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    clip: float | None = 1.0


@dataclass(frozen=True)
class Cfg:
    name: str = "run"
    steps: int = 10
    amp: bool = True
    loss: Literal["supcon", "simclr"] = "supcon"
    out: Path = Path("runs")
    aus: tuple[int, ...] = (1, 2)
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_then_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 20\noptim:\n  lr: 5e-4\n")
    cfg = load_config(
        Cfg, y, ["optim.betas=[0.8, 0.9]", "amp=false", "aus=[1, 4, 12]", "loss=simclr", "steps=30"]
    )
    assert cfg.steps == 30 and cfg.amp is False and cfg.loss == "simclr"
    assert cfg.optim.lr == pytest.approx(5e-4) and cfg.optim.betas == (0.8, 0.9) and cfg.optim.clip == 1.0
    assert cfg.aus == (1, 4, 12) and cfg.name == "run"
    assert load_config(Cfg) == Cfg()


def test_optional_and_path_coercion():
    cfg = load_config(Cfg, None, ["optim.clip=null", "out=/tmp/x", "name=123", "optim.lr=2"])
    assert cfg.optim.clip is None and cfg.out == Path("/tmp/x") and cfg.name == "123"
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 2.0


def test_unknown_key_names_key_file_and_valid_keys(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(UserError) as err:
        load_config(Cfg, y)
    msg = str(err.value)
    assert "optim.lrr" in msg and str(y) in msg and "lr, betas, clip" in msg
    with pytest.raises(UserError, match="unknown key 'stepz'.*name, steps, amp"):
        load_config(Cfg, None, ["stepz=3"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("steps=abc", "expects an integer"),
        ("amp=3", "true or false"),
        ("loss=moco", "must be one of"),
        ("optim.betas=[1]", "2 values"),
        ("steps", "key=value"),
    ],
)
def test_bad_values_are_user_errors(override, expected):
    with pytest.raises(UserError, match=expected):
        load_config(Cfg, None, [override])


def test_save_then_load_round_trips(tmp_path):
    cfg = load_config(Cfg, None, ["optim.lr=0.25", "aus=[6]"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Cfg, tmp_path / "config.yaml") == cfg
    assert config_to_dict(cfg)["optim"]["betas"] == [0.9, 0.98]


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(Cfg, tmp_path / "l.yaml")


@dataclass(frozen=True)
class Checked:
    steps: int = 1
    lr: float = 0.1

    def __post_init__(self):
        require_number("steps", self.steps, integer=True, at_least=1)
        require_number("lr", self.lr, at_least=0)


@dataclass(frozen=True)
class Outer:
    train: Checked = field(default_factory=Checked)


def test_range_checks_name_the_file_and_the_full_key(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("train:\n  steps: 0\n")
    with pytest.raises(UserError, match=rf"^{y}: key 'train.steps' must be an integer >= 1, got 0$"):
        load_config(Outer, y)
    with pytest.raises(
        UserError, match=r"^override 'train.lr=\.nan': key 'train.lr' must be a finite number >= 0"
    ):
        load_config(Outer, None, ["train.lr=.nan"])
    with pytest.raises(UserError, match="key 'train.steps' expects an integer, got 2.5"):
        load_config(Outer, None, ["train.steps=2.5"])  # the type check comes first
    for bad in (True, "3", float("inf")):
        with pytest.raises(InvalidValue):
            require_number("x", bad)
    require_number("x", 0.5, above=0, below=1)
    with pytest.raises(InvalidValue, match=r"x must be a finite number > 0 and < 1, got 1"):
        require_number("x", 1, above=0, below=1)
