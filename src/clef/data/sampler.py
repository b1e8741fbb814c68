"""Batch samplers: which frames meet in a batch (docs/method.md §3, "ours, sampling").

Stage 1 contrasts activities, and lab datasets have only 8–10 of them, so a random batch is a poor
batch: :class:`ActivityBalancedBatchSampler` puts K activities × M frames in every batch, spreads each
activity's M frames over as many subjects as it can (same activity, different people: the positives
the paper wants), and keeps only every ``frame_stride``-th frame of each video per pass (consecutive
video frames are near duplicates, which would make trivially easy positives).

Both samplers here follow one protocol the training engine relies on:

* deterministic: the batches of an epoch are a function of ``(seed, epoch)`` only;
* sharded: every rank builds the same global list of batches and takes every ``world_size``-th one,
  so ranks are disjoint and all have the same number of equally sized batches;
* resumable: ``set_epoch(epoch, position)`` skips the first ``position`` batches of that rank's epoch,
  and ``state_dict()`` / ``load_state_dict()`` carry ``{seed, epoch, position}``. ``position`` counts
  batches *yielded* by ``__iter__``; a consumer that prefetches (a DataLoader with workers) must save
  the number of batches it has *consumed* instead, as :mod:`clef.engine` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from clef.distributed import get_rank, get_world_size

__all__ = ["ActivityBalancedBatchSampler", "RandomBatchSampler"]


class _ShardedEpochSampler(torch.utils.data.Sampler):
    """Common part: per-epoch global batch list, rank sharding, resume position."""

    def __init__(self, seed: int, rank: int | None, world_size: int | None) -> None:
        self.seed = int(seed)
        self.rank = get_rank() if rank is None else int(rank)
        self.world_size = get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, {self.world_size})")
        self.epoch = 0
        self.position = 0

    # Subclasses: the number of batches per rank and the global batches of an epoch.
    def __len__(self) -> int:
        raise NotImplementedError

    def _global_batches(self, rng: np.random.Generator, count: int) -> list[list[int]]:
        raise NotImplementedError

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (all of them, ignoring the position)."""
        rng = np.random.default_rng([self.seed, epoch])
        per_rank = len(self)
        everything = self._global_batches(rng, per_rank * self.world_size)
        return everything[self.rank :: self.world_size]

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """Start ``epoch`` at its ``position``-th batch (0 = the beginning)."""
        if not 0 <= position <= len(self):
            raise ValueError(f"position {position} is not in [0, {len(self)}]")
        self.epoch, self.position = int(epoch), int(position)

    def __iter__(self) -> Iterator[list[int]]:
        epoch_batches = self.batches(self.epoch)
        while self.position < len(epoch_batches):
            batch = epoch_batches[self.position]
            self.position += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state['seed']}, this sampler has {self.seed}"
            )
        self.set_epoch(int(state["epoch"]), int(state["position"]))


class ActivityBalancedBatchSampler(_ShardedEpochSampler):
    """K activities × M frames per batch, each activity drawn across subjects, with a frame stride.

    Args:
        activity: (N,) activity name (or code) per record; missing values (None/NaN/NA) exclude the
            record (it cannot be used in stage 1).
        subject: (N,) subject per record; missing values form one "unknown subject" group.
        frame: (N,) frame number within its video (a video = one subject × activity); missing values
            fall back to the record order.
        activities_per_batch: K, at most the number of activities.
        frames_per_activity: M.
        frame_stride: per pass over a video keep every ``frame_stride``-th frame (in frame order) from
            a random phase, so two frames of a video in one pass are ≥ stride frames apart and every
            frame is used across passes.
        seed: with the epoch, fixes every batch.
        rank, world_size: shard; default from :mod:`clef.distributed`.
        batches_per_epoch: per rank; default = one pass over the strided frames divided by K·M and by
            the world size (at least 1).

    Each activity yields an endless stream: a pass takes the strided frames of each of its videos,
    shuffles each video's frames, orders the subjects at random and deals frames round-robin over
    subjects, so consecutive frames of the stream come from different people. A batch takes the next
    M frames of each of K activities (all activities when K equals their number, else K chosen at
    random per batch). An activity with fewer than M strided frames repeats frames within a batch.

    Yields:
        lists of K·M record indices (grouped by activity).
    """

    def __init__(
        self,
        activity: Sequence | np.ndarray,
        subject: Sequence | np.ndarray,
        frame: Sequence | np.ndarray,
        activities_per_batch: int,
        frames_per_activity: int,
        frame_stride: int = 1,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        batches_per_epoch: int | None = None,
    ) -> None:
        super().__init__(seed, rank, world_size)
        act = pd.Series(np.asarray(activity, dtype=object))
        subj = pd.Series(np.asarray(subject, dtype=object)).where(lambda s: s.notna(), "<unknown>")
        frm = pd.to_numeric(pd.Series(np.asarray(frame, dtype=object)), errors="coerce")
        if not len(act) == len(subj) == len(frm):
            raise ValueError(
                f"activity, subject and frame differ in length: {len(act)}, {len(subj)}, {len(frm)}"
            )
        if frame_stride < 1 or frames_per_activity < 1 or activities_per_batch < 1:
            raise ValueError("frame_stride, frames_per_activity and activities_per_batch must be >= 1")
        table = pd.DataFrame({"activity": act, "subject": subj.astype(str), "frame": frm})
        table["row"] = np.arange(len(table))
        table = table[table["activity"].notna()]
        # Missing frame numbers: fall back to record order (rows are already in record order).
        table["frame"] = table["frame"].fillna(table["row"].astype(float))
        self.activities: list = sorted(table["activity"].unique(), key=str)
        if activities_per_batch > len(self.activities):
            raise ValueError(
                f"activities_per_batch={activities_per_batch} but the records hold only "
                f"{len(self.activities)} activities: {', '.join(map(str, self.activities))}"
            )
        self.k = int(activities_per_batch)
        self.m = int(frames_per_activity)
        self.stride = int(frame_stride)
        # activity -> list of (subject, record indices sorted by frame); sorted for determinism.
        self._videos: list[list[np.ndarray]] = []
        strided = 0
        for a in self.activities:
            rows = table[table["activity"] == a].sort_values(["subject", "frame", "row"], kind="stable")
            videos = [g["row"].to_numpy() for _, g in rows.groupby("subject", sort=True)]
            self._videos.append(videos)
            strided += sum(-(-len(v) // self.stride) for v in videos)
        if batches_per_epoch is None:
            batches_per_epoch = max(1, strided // (self.k * self.m) // self.world_size)
        self._per_rank = int(batches_per_epoch)

    @classmethod
    def from_records(cls, records: pd.DataFrame, **kwargs) -> ActivityBalancedBatchSampler:
        """Build from a record table's ``activity``, ``subject`` and ``frame`` columns (kwargs as above)."""
        return cls(records["activity"], records["subject"], records["frame"], **kwargs)

    def __len__(self) -> int:
        return self._per_rank

    def _activity_stream(self, a: int, rng: np.random.Generator) -> Iterator[int]:
        while True:
            per_subject = []
            for rows in self._videos[a]:
                phase = int(rng.integers(min(self.stride, len(rows))))
                kept = rows[phase :: self.stride].copy()
                rng.shuffle(kept)
                per_subject.append(kept)
            order = rng.permutation(len(per_subject))
            longest = max(len(p) for p in per_subject)
            for t in range(longest):
                for s in order:
                    if t < len(per_subject[s]):
                        yield int(per_subject[s][t])

    def _global_batches(self, rng: np.random.Generator, count: int) -> list[list[int]]:
        # One child generator per activity stream so that the draws of one activity do not shift
        # those of another; the batch-level draws use the parent generator.
        children = rng.spawn(len(self.activities))
        streams = [self._activity_stream(a, children[a]) for a in range(len(self.activities))]
        out = []
        for _ in range(count):
            if self.k == len(self.activities):
                chosen = range(len(self.activities))
            else:
                chosen = np.sort(rng.choice(len(self.activities), size=self.k, replace=False))
            out.append([next(streams[a]) for a in chosen for _ in range(self.m)])
        return out


class RandomBatchSampler(_ShardedEpochSampler):
    """Shuffled batches of ``batch_size`` records (stage 2 and linear probes), same protocol.

    Args:
        num_records: N; records 0..N-1.
        batch_size: per rank.
        seed, rank, world_size: as :class:`ActivityBalancedBatchSampler`.
        drop_last: drop the incomplete last global batch (default). Without it the last batches are
            filled up by records from the start of the permutation so that every rank's batches keep
            the same size (collectives need equal shapes).
    """

    def __init__(
        self,
        num_records: int,
        batch_size: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        super().__init__(seed, rank, world_size)
        if num_records < 1 or batch_size < 1:
            raise ValueError("num_records and batch_size must be >= 1")
        self.n, self.batch_size, self.drop_last = int(num_records), int(batch_size), drop_last
        global_batch = self.batch_size * self.world_size
        full = self.n // global_batch
        self._per_rank = max(1, full if drop_last else -(-self.n // global_batch))

    def __len__(self) -> int:
        return self._per_rank

    def _global_batches(self, rng: np.random.Generator, count: int) -> list[list[int]]:
        perm = rng.permutation(self.n)
        need = count * self.batch_size
        if need > self.n:
            perm = np.concatenate([perm] * (-(-need // self.n)))
        return [perm[i * self.batch_size : (i + 1) * self.batch_size].tolist() for i in range(count)]
