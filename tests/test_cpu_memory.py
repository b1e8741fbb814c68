"""clef.cpu_memory: inside the context a training step reuses freed memory; on exit it goes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clef import cpu_memory

pytestmark = pytest.mark.skipif(not cpu_memory.available(), reason="needs Linux with glibc")

FRESH = 4096  # pages (16 MiB): a step that hands its activations back faults at least this often

# Run in a fresh interpreter: glibc's thresholds adapt to what a process has freed before, so only a
# new process shows the defaults a user's training starts from.
_SCRIPT = """
import json, resource, torch
from clef import cpu_memory
from clef.model.image_encoders import SmallCNN

torch.manual_seed(0)
net = SmallCNN((32, 64, 128, 256), 1, 64)
x = torch.rand(32, 3, 64, 64)

def step():
    net(x).square().mean().backward()
    net.zero_grad(set_to_none=True)

def faults_per_step(steps=5):
    # Median over steps: after a change of policy the heap may still grow by a block in an odd step
    # (seen: one step of 4,096 faults among zeros), while the default faults in every step.
    for _ in range(5):
        step()
    counts = []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sorted(counts)[steps // 2]

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

result = {"default": faults_per_step()}
with cpu_memory.retain_freed_memory():
    result["inside"] = faults_per_step()
    result["rss_inside"] = rss_mib()  # the step's freed blocks are still held here
result["rss_after"] = rss_mib()
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def measured():
    src = str(Path(cpu_memory.__file__).parents[1])  # clef importable without an installed package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


def test_default_malloc_faults_the_step_in_again_every_step(measured):
    # What the context fixes: glibc gives a step's large blocks back to the kernel on free, so the
    # next step page-faults them in again (measured ~36,000 faults a step).
    assert measured["default"] > FRESH


def test_inside_the_context_a_step_reuses_freed_memory(measured):
    assert measured["inside"] < FRESH / 10  # measured: 0


def test_leaving_the_context_hands_the_held_memory_back(measured):
    assert measured["rss_inside"] - measured["rss_after"] > 16  # MiB (measured: ~100)


@pytest.fixture
def settings(monkeypatch):
    """The mallopt settings the context applies, in order (recorded instead of applied)."""
    applied = []
    monkeypatch.setattr(cpu_memory, "_set", lambda libc, values: applied.append(values))
    return applied


def test_nested_contexts_keep_the_policy_until_the_outermost_exits(settings):
    with cpu_memory.retain_freed_memory():
        with cpu_memory.retain_freed_memory():
            assert settings == [cpu_memory._RETAIN]
        assert settings == [cpu_memory._RETAIN]  # the inner exit did not restore
    assert settings == [cpu_memory._RETAIN, cpu_memory._AFTER]
    assert cpu_memory._depth == 0


def test_disabled_context_changes_nothing(settings):
    with cpu_memory.retain_freed_memory(enabled=False):
        assert cpu_memory._depth == 0
    assert settings == []


def test_policy_is_restored_after_an_exception(settings):
    with pytest.raises(RuntimeError), cpu_memory.retain_freed_memory():
        raise RuntimeError("boom")
    assert settings == [cpu_memory._RETAIN, cpu_memory._AFTER]
    assert cpu_memory._depth == 0
