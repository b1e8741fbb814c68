from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from clef.data.records import make_records
from clef.data.sampler import ActivityBalancedBatchSampler, RandomBatchSampler


def _table(n_subjects=5, activities=("T1", "T2", "T3", "T4"), frames=40):
    rows = [(s, a, f) for s in range(n_subjects) for a in activities for f in range(frames)]
    subj, act, frm = zip(*rows, strict=True)
    return make_records(
        {"subject": [f"S{s}" for s in subj], "activity": list(act), "frame": list(frm)}, len(rows)
    )


def _sampler(records, **kw):
    args = dict(activities_per_batch=4, frames_per_activity=5, frame_stride=4, seed=3)
    args.update(kw)
    return ActivityBalancedBatchSampler(records["activity"], records["subject"], records["frame"], **args)


def test_batches_are_balanced_across_activities_and_subjects():
    rec = _table()
    sampler = _sampler(rec)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (5 * 4 * 10) // 20
    for batch in batches:
        assert len(batch) == 20 and len(set(batch)) == 20
        counts = Counter(rec["activity"].iloc[batch])
        assert sorted(counts.values()) == [5, 5, 5, 5]
        for act in counts:
            rows = rec.iloc[batch]
            subjects = rows[rows["activity"] == act]["subject"]
            assert subjects.nunique() == 5  # M = 5 frames from 5 different people


def test_frame_stride_keeps_near_duplicates_apart_within_a_pass():
    rec = _table(n_subjects=2, activities=("T1",), frames=64)
    sampler = _sampler(
        rec, activities_per_batch=1, frames_per_activity=8, frame_stride=8, batches_per_epoch=2
    )
    # One pass over the activity = 2 subjects x 8 strided frames = 16 = 2 batches.
    rows = rec.iloc[[i for b in sampler for i in b]]
    for _, group in rows.groupby("subject"):
        frames = np.sort(group["frame"].to_numpy(dtype=int))
        assert len(frames) == 8 and np.all(np.diff(frames) == 8)


def test_subset_of_activities_per_batch():
    rec = _table()
    for batch in _sampler(rec, activities_per_batch=2, frames_per_activity=3):
        assert sorted(Counter(rec["activity"].iloc[batch]).values()) == [3, 3]


def test_deterministic_for_seed_and_epoch_and_varies_with_them():
    rec = _table()
    a, b = _sampler(rec), _sampler(rec)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    e1 = list(a)
    assert e1 == list(b) and e1 != _sampler(rec).batches(0)
    assert _sampler(rec, seed=4).batches(0) != _sampler(rec).batches(0)


def test_ranks_are_disjoint_and_equally_sized():
    rec = _table(frames=80)
    shards = [_sampler(rec, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == (5 * 4 * 20) // 20 // 2
    seen = [set(i for b in s for i in b) for s in shards]
    # Within one pass no record repeats, so the ranks' records are disjoint.
    assert not (seen[0] & seen[1])
    single = _sampler(rec, batches_per_epoch=2 * len(shards[0]))
    assert single.batches(0)[0::2] == shards[0].batches(0) and single.batches(0)[1::2] == shards[1].batches(0)


def test_resume_position_continues_exactly():
    rec = _table()
    full = _sampler(rec).batches(0)
    s = _sampler(rec)
    it = iter(s)
    first = [next(it) for _ in range(3)]
    state = s.state_dict()
    assert state == {"seed": 3, "epoch": 0, "position": 3}
    resumed = _sampler(rec)
    resumed.load_state_dict(state)
    assert first + list(resumed) == full
    with pytest.raises(ValueError, match="seed"):
        _sampler(rec, seed=9).load_state_dict(state)


def test_missing_activity_is_excluded_and_missing_values_tolerated():
    rec = _table(n_subjects=3, activities=("T1", "T2"), frames=10)
    rec.loc[0:4, "activity"] = pd.NA
    rec.loc[5:9, "frame"] = pd.NA
    rec.loc[10:12, "subject"] = pd.NA
    s = _sampler(rec, activities_per_batch=2, frames_per_activity=2, frame_stride=1)
    used = {i for b in s for i in b}
    assert not used & set(range(5)) and s.activities == ["T1", "T2"]
    with pytest.raises(ValueError, match="only 2 activities: T1, T2"):
        _sampler(rec, activities_per_batch=3)


def test_random_batch_sampler_protocol():
    s = [RandomBatchSampler(50, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(s[0]) == 3
    b0, b1 = list(s[0]), list(s[1])
    assert all(len(b) == 8 for b in b0 + b1)
    assert not {i for b in b0 for i in b} & {i for b in b1 for i in b}
    t = RandomBatchSampler(50, 8, seed=1, rank=0, world_size=2)
    t.set_epoch(0, 2)
    assert list(t) == b0[2:]
    padded = RandomBatchSampler(10, 4, seed=0, drop_last=False)
    assert len(padded) == 3 and all(len(b) == 4 for b in padded)
