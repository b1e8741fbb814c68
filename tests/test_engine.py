from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from clef.data.sampler import RandomBatchSampler
from clef.engine import (
    CHECKPOINT_NAME,
    EngineConfig,
    NonFiniteLossError,
    ParamGroup,
    build_optimizer,
    load_checkpoint,
    seed_everything,
    train,
    training_layout,
    warmup_cosine,
)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.drop = torch.nn.Dropout(0.3)  # exercises the torch RNG state across a resume
        self.head = torch.nn.Linear(8, 3)
        self.locked = torch.nn.Linear(4, 8)
        self.locked.requires_grad_(False)
        self.logit_scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        h = self.drop(self.norm(self.body(x) + self.locked(x)))
        return self.head(h) * self.logit_scale


class DictData(torch.utils.data.Dataset):
    def __init__(self, n=20):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _setup(kill_at_call=None, nan_at_call=None):
    seed_everything(0)
    model = Tiny()
    loader = torch.utils.data.DataLoader(DictData(), batch_sampler=RandomBatchSampler(20, 4, seed=1))
    gen = torch.Generator().manual_seed(123)
    calls = {"n": 0}

    def step_fn(m, batch):
        calls["n"] += 1
        if calls["n"] == kill_at_call:
            raise KeyboardInterrupt("killed")
        noise = 0.1 * torch.randn(batch["x"].shape, generator=gen)  # plays the augmentation's generator
        loss = F.cross_entropy(m(batch["x"] + noise), batch["y"])
        if calls["n"] == nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss, "noise": noise.abs().mean()}

    groups = {
        "body": ParamGroup(
            list(model.body.parameters()) + list(model.norm.parameters()) + [model.logit_scale], 1e-2
        ),
        "head": ParamGroup(list(model.head.parameters()) + list(model.locked.parameters()), 3e-2),
    }
    return model, step_fn, groups, loader, {"augment": gen}


CFG = EngineConfig(steps=8, warmup_steps=2, grad_accum=2, checkpoint_every=3, log_every=1, progress=False)


def test_kill_and_resume_reaches_bit_identical_weights(tmp_path):
    model, step_fn, groups, loader, gens = _setup()
    result = train(model, step_fn, groups, loader, CFG, tmp_path / "a", generators=gens)
    assert result.step == 8 and result.epoch == 3  # 16 micro-batches over 5-batch epochs
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    # Killed during step 6 (micro-batch 11): the last checkpoint is the one of step 3.
    model, step_fn, groups, loader, gens = _setup(kill_at_call=11)
    with pytest.raises(KeyboardInterrupt):
        train(model, step_fn, groups, loader, CFG, tmp_path / "b", generators=gens)
    ckpt = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert ckpt["step"] == 3 and ckpt["epoch"] == 1 and ckpt["position"] == 1

    # A fresh process: different initial weights and RNG, all replaced by the checkpoint.
    seed_everything(99)
    model, step_fn, groups, loader, gens = _setup()
    torch.manual_seed(99)
    gens["augment"].manual_seed(7)
    result = train(
        model,
        step_fn,
        groups,
        loader,
        CFG,
        tmp_path / "b",
        generators=gens,
        resume=tmp_path / "b" / CHECKPOINT_NAME,
    )
    assert result.step == 8
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    # The metrics of the killed steps 4-5 were dropped and redone: one line per step.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_locked_parameter_unchanged_others_trained_and_run_folder(tmp_path):
    model, step_fn, groups, loader, gens = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, step_fn, groups, loader, CFG, tmp_path, generators=gens, run_config=CFG)
    after = model.state_dict()
    assert torch.equal(after["locked.weight"], before["locked.weight"])
    assert torch.equal(after["locked.bias"], before["locked.bias"])
    for key in ("body.weight", "body.bias", "norm.weight", "head.weight", "logit_scale"):
        assert not torch.equal(after[key], before[key]), key
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["grad_accum"] == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "noise", "grad_norm", "lr/body", "lr/body/no_decay", "lr/head", "images_per_s"} <= set(
        records[0]
    )
    # Each step uses the learning rate of its schedule entry: peak * multiplier[step - 1].
    multipliers = warmup_cosine(8, 2)
    for record in records:
        assert record["lr/head"] == pytest.approx(3e-2 * multipliers[record["step"] - 1])
    assert np.isfinite([r["loss"] for r in records]).all()


def test_non_finite_loss_aborts_naming_the_step(tmp_path):
    model, step_fn, groups, loader, gens = _setup(nan_at_call=5)  # micro-batch 5 = step 3
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3"):
        train(model, step_fn, groups, loader, CFG, tmp_path, generators=gens)


def test_schedule_values_at_known_steps():
    s = warmup_cosine(10, 2, final_ratio=0.1)
    assert len(s) == 10
    assert s[0] == pytest.approx(0.5) and s[1] == pytest.approx(1.0) and s[2] == pytest.approx(1.0)
    assert s[6] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the 8 cosine steps
    assert np.all(np.diff(s[2:]) < 0) and s[-1] > 0.1
    assert warmup_cosine(4, 0)[0] == pytest.approx(1.0)


def test_no_weight_decay_on_norms_biases_and_scalars():
    model = Tiny()
    opt = build_optimizer({"all": ParamGroup(model.parameters(), 1e-3)}, EngineConfig(weight_decay=0.1))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["all"]["weight_decay"] == 0.1 and by_name["all/no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in by_name["all"]["params"])
    assert any(p is model.logit_scale for p in by_name["all/no_decay"]["params"])
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    with pytest.raises(ValueError, match="also in another group"):
        build_optimizer(
            {"a": ParamGroup([model.logit_scale], 1.0), "b": ParamGroup([model.logit_scale], 1.0)},
            EngineConfig(),
        )


def test_tensorboard_is_optional(tmp_path):
    model, step_fn, groups, loader, gens = _setup()
    cfg = EngineConfig(steps=2, warmup_steps=1, progress=False, tensorboard=True)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard package is not installed"):
            train(model, step_fn, groups, loader, cfg, tmp_path, generators=gens)
        assert (tmp_path / "metrics.jsonl").exists()
    else:
        train(model, step_fn, groups, loader, cfg, tmp_path, generators=gens)
        assert (tmp_path / "tensorboard").is_dir()


# ------------------------------------------------------------------------- speed options (issue 5)
class ConvNet(torch.nn.Module):
    """Stem, GroupNorm, a strided 1×1 shortcut (the SmallCNN pattern), pooled linear head."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.norm = torch.nn.GroupNorm(4, width)
        self.down = torch.nn.Conv2d(width, width, 1, stride=2, bias=False)
        self.conv = torch.nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(width, 3)

    def forward(self, x):
        h = torch.relu(self.norm(self.stem(x)))
        return self.head((self.down(h) + self.conv(h)).mean(dim=(2, 3)))


def _conv_loss_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_channels_last_layout_gives_the_same_loss_and_gradients_and_is_undone():
    torch.manual_seed(0)
    model = ConvNet()
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    loss, grads = _conv_loss_and_grads(model, x, y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    with training_layout(model, EngineConfig()):
        assert model.stem.weight.is_contiguous(memory_format=torch.channels_last)
        assert not model.stem.weight.is_contiguous()  # really converted, not trivially both
        assert model(x).shape == (6, 3)
        loss_cl, grads_cl = _conv_loss_and_grads(model, x, y)
    assert list(model.parameters()) == params  # the same Parameter objects (optimisers keep them)
    assert torch.allclose(loss_cl, loss, rtol=1e-5, atol=1e-6)
    for name, g in grads.items():
        assert torch.allclose(grads_cl[name], g, rtol=1e-4, atol=1e-6), name
    for key, value in model.state_dict().items():
        assert value.is_contiguous() and torch.equal(value, before[key]), key
    # Off by config, and off for a strided 1x1 convolution of < 16 input channels (oneDNN bug).
    with training_layout(model, EngineConfig(channels_last=False)):
        assert model.stem.weight.is_contiguous()
    narrow = ConvNet(width=8)
    with training_layout(narrow, EngineConfig()):
        assert narrow.stem.weight.is_contiguous()


def test_fused_adamw_is_the_default_and_matches_the_per_tensor_loop():
    torch.manual_seed(0)
    a, b = ConvNet(), ConvNet()
    b.load_state_dict(a.state_dict())
    opt_a = build_optimizer({"all": ParamGroup(a.parameters(), 1e-2)}, EngineConfig())
    opt_b = build_optimizer({"all": ParamGroup(b.parameters(), 1e-2)}, EngineConfig(fused_optimizer=False))
    assert opt_a.defaults["fused"] is True and not opt_b.defaults["fused"]
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            _conv_loss_and_grads(model, x, y)
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert not torch.equal(p, ConvNet().state_dict()[name])
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name


class ImageData(torch.utils.data.Dataset):
    def __init__(self, n=12):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _conv_run(tmp_path, cfg, resume=None, kill_at_call=None):
    seed_everything(0)
    model = ConvNet()
    loader = torch.utils.data.DataLoader(ImageData(), batch_sampler=RandomBatchSampler(12, 4, seed=1))
    calls = {"n": 0}

    def step_fn(m, batch):
        calls["n"] += 1
        if calls["n"] == kill_at_call:
            raise KeyboardInterrupt("killed")
        return {"loss": F.cross_entropy(m(batch["x"]), batch["y"])}

    groups = {"all": ParamGroup(model.parameters(), 1e-2)}
    if kill_at_call is None:
        train(model, step_fn, groups, loader, cfg, tmp_path, resume=resume)
    else:
        with pytest.raises(KeyboardInterrupt):
            train(model, step_fn, groups, loader, cfg, tmp_path, resume=resume)
    return model


def test_channels_last_fused_run_resumes_exactly_with_plain_checkpoints(tmp_path):
    cfg = EngineConfig(steps=4, warmup_steps=1, checkpoint_every=2, progress=False)
    reference = _conv_run(tmp_path / "a", cfg)
    assert all(p.is_contiguous() for p in reference.parameters())  # layout restored after the run
    ckpt = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    assert set(ckpt["model"]) == set(reference.state_dict())  # plain keys: no compile/DDP prefixes
    assert all(v.is_contiguous() for v in ckpt["model"].values())
    # A run killed in step 3 (after the checkpoint of step 2) and resumed reaches the same weights
    # bit for bit.
    _conv_run(tmp_path / "b", cfg, kill_at_call=3)
    resumed = _conv_run(tmp_path / "b", cfg, resume=tmp_path / "b" / CHECKPOINT_NAME)
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    # The default layout and optimiser reach the same weights up to rounding, and so does a run whose
    # checkpoint was written by the per-tensor AdamW and resumed with the fused one.
    before = dataclasses.replace(cfg, channels_last=False, fused_optimizer=False)
    plain = _conv_run(tmp_path / "c", before)
    _conv_run(tmp_path / "d", before, kill_at_call=3)  # the speed options may change on resume
    switched = _conv_run(tmp_path / "d", cfg, resume=tmp_path / "d" / CHECKPOINT_NAME)
    for other in (plain, switched):
        for key, value in other.state_dict().items():
            # atol: Adam's normalised step turns rounding-level gradient differences into ~1e-5 moves.
            assert torch.allclose(value, reference.state_dict()[key], rtol=1e-4, atol=2e-4), key


@pytest.mark.parametrize("retain", [True, False])
def test_train_keeps_freed_cpu_memory_while_training_only(tmp_path, retain):
    from clef import cpu_memory

    model, step_fn, groups, loader, gens = _setup()
    depths = []

    def recording_step(m, batch):
        depths.append(cpu_memory._depth)
        return step_fn(m, batch)

    cfg = dataclasses.replace(CFG, steps=2, retain_cpu_memory=retain)
    train(model, recording_step, groups, loader, cfg, tmp_path, generators=gens)
    assert depths and set(depths) == {1 if retain and cpu_memory.available() else 0}
    assert cpu_memory._depth == 0


# ------------------------------------------------------------ bad checkpoints and settings (issue 14)
class _Payload:
    """Unpickling this would create a file: proof that nothing in a refused checkpoint ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(tmp_path):
    """name -> (path, the one-line reason expected after the path)."""
    import pickle

    good = tmp_path / "good.pt"
    model, step_fn, groups, loader, gens = _setup()
    train(
        model, step_fn, groups, loader, dataclasses.replace(CFG, steps=1), tmp_path / "run", generators=gens
    )
    good.write_bytes((tmp_path / "run" / CHECKPOINT_NAME).read_bytes())
    data = good.read_bytes()
    files = {
        "missing": (tmp_path / "nothing.pt", None, "no such checkpoint file"),
        "folder": (tmp_path / "run", None, "a folder, not a checkpoint file"),
        "empty": (tmp_path / "empty.pt", b"", "empty file"),
        "truncated": (tmp_path / "truncated.pt", data[: len(data) // 2], "truncated or damaged"),
        "random": (
            tmp_path / "random.pt",
            bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
            "not a PyTorch checkpoint file",
        ),
        "text": (tmp_path / "notes.pt", b"just some text\n", "not a PyTorch checkpoint file"),
        "model file": (
            tmp_path / "stage1.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{}",
            "a model file",
        ),
        "pickle": (
            tmp_path / "evil.pkl",
            pickle.dumps(_Payload(tmp_path / "RAN"), protocol=2),
            r"refused: it holds a Python object \(posix.system\)",
        ),
    }
    torch.save({"x": _Payload(tmp_path / "RAN")}, tmp_path / "evil.pt")  # torch's zip format, same payload
    files["torch pickle"] = (
        tmp_path / "evil.pt",
        None,
        r"refused: it holds a Python object \(posix.system\)",
    )
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    files["foreign"] = (tmp_path / "other.pt", None, "not a clef training checkpoint")
    incomplete = load_checkpoint(good)
    del incomplete["rng"]
    torch.save(incomplete, tmp_path / "incomplete.pt")
    files["incomplete"] = (
        tmp_path / "incomplete.pt",
        None,
        r"incomplete clef training checkpoint \(no rng\)",
    )
    for path, content, _ in files.values():
        if content is not None:
            path.write_bytes(content)
    return {name: (path, reason) for name, (path, _, reason) in files.items()}


def test_bad_checkpoints_are_one_line_errors_naming_the_file_and_nothing_in_them_runs(tmp_path):
    from clef.errors import UserError

    for name, (path, reason) in _bad_checkpoints(tmp_path).items():
        with pytest.raises(UserError) as err:
            load_checkpoint(path)
        message = str(err.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, name
        assert re.search(reason, message), (name, message)
        # The same refusal when a run is resumed from it, before anything is written.
        model, step_fn, groups, loader, gens = _setup()
        with pytest.raises(UserError, match=re.escape(str(path))):
            train(
                model,
                step_fn,
                groups,
                loader,
                CFG,
                tmp_path / f"resumed-{name}",
                generators=gens,
                resume=path,
            )
        assert not (tmp_path / f"resumed-{name}").exists()
    assert not (tmp_path / "RAN").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=0", "key 'steps' must be an integer >= 1, got 0"),
        ("steps=-5", "key 'steps' must be an integer >= 1, got -5"),
        ("warmup_steps=-1", "key 'warmup_steps' must be an integer >= 0"),
        ("grad_accum=0", "key 'grad_accum' must be an integer >= 1"),
        ("checkpoint_every=0", "key 'checkpoint_every' must be an integer >= 1"),
        ("log_every=-1", "key 'log_every' must be an integer >= 1"),
        ("eps=0", "key 'eps' must be a finite number > 0"),
        ("eps=.nan", "key 'eps' must be a finite number > 0, got nan"),
        ("weight_decay=-0.1", "key 'weight_decay' must be a finite number >= 0"),
        ("final_lr_ratio=2", "key 'final_lr_ratio' must be a finite number >= 0 and <= 1"),
        ("betas=[0.9, 1.0]", "key 'betas' must be a finite number >= 0 and < 1, got 1.0"),
        ("clip_grad_norm=.inf", "key 'clip_grad_norm' must be a finite number > 0, got inf"),
    ],
)
def test_out_of_range_engine_settings_fail_when_the_config_is_read(override, message):
    from clef.config import load_config
    from clef.errors import UserError

    with pytest.raises(UserError, match=re.escape(f"override '{override}': {message}")):
        load_config(EngineConfig, None, [override])
    key, value = override.split("=")
    with pytest.raises(ValueError, match=re.escape(message.removeprefix("key '").replace("'", "", 1))):
        EngineConfig(**{key: yaml.safe_load(value)})  # the same check when built in code


def test_warmup_longer_than_the_run_is_allowed_and_all_warm_up():
    assert EngineConfig(steps=2, warmup_steps=50).warmup_steps == 50
    assert warmup_cosine(2, 50).tolist() == [1 / 2, 2 / 2]  # the schedule clamps the warm-up to the run


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1e-3])
def test_build_optimizer_refuses_a_learning_rate_that_cannot_train(lr):
    from clef.errors import UserError

    model = Tiny()
    with pytest.raises(
        UserError, match=f"learning rate of parameter group 'head' must be a finite number >= 0, got {lr}"
    ):
        build_optimizer(
            {
                "body": ParamGroup(model.body.parameters(), 1e-3),
                "head": ParamGroup(model.head.parameters(), lr),
            },
            EngineConfig(),
        )
