"""Linear probes of frozen image features (issue 5; docs/method.md §3's argument, measured).

A probe asks what a representation makes *linearly* available, with the encoder frozen:

- **AU F1**: one binary logistic regression per AU, fitted on the fold's training subjects, scored on
  its held-out test subjects with :func:`clef.metrics.au_f1` (probability threshold 0.5; frames where
  the AU is not coded are left out of both fitting and scoring). The mean over AUs is reported.
- **Expression accuracy**: one multinomial logistic regression on the records' ``expression`` column
  (the synthetic world's side file gives one per frame), same train/test subjects; skipped (None)
  when the records carry fewer than two expressions on the training side or none on the test side.
- **Subject-ID accuracy**: how much identity the features carry. Test subjects are unseen by the
  other probes, so identity is measured *within* the test subjects: for each test subject, its
  videos (activities, sorted) are dealt alternately into a fitting half and a scoring half
  (T1, T3, T5, T7 fit; T2, T4, T6, T8 score), and a multinomial logistic regression over the test
  subjects is fitted on the first half and scored on the second. Fitting and scoring frames thus
  come from *different videos with different expressions*: only identity that survives a change of
  activity is counted. Subjects with fewer than two videos are left out; chance is
  1 / (number of subjects), reported beside it. A flexible classifier can saturate this (on the
  synthetic world even random features reach 100 %), so the same split is also scored with a
  parameter-free 1-nearest-neighbour rule in cosine similarity (``subject_nn_accuracy``): the share
  of scoring frames whose most similar fitting frame shows the same person.

**Features**: the image embedding ``model.encode_image(x)`` — the image tower's projection into the
shared image–text space, L2-normalised, (N, D) — the representation stage 1 trains and stage 2 starts
from. Features are standardised (zero mean, unit variance, statistics of the fitting set) before each
regression. They are extracted once per frame, batched, in eval mode, without gradients.

The train and test record sets must be subject-exclusive; :func:`probe_features` checks it and
raises :class:`clef.errors.UserError` on leakage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from clef.errors import UserError

__all__ = [
    "FEATURE_NAME",
    "embedding_spread",
    "variance_share",
    "ProbeConfig",
    "ProbeResult",
    "extract_features",
    "load_probe_records",
    "probe_features",
    "probe_model",
    "subsample_frames",
    "subject_split",
]

FEATURE_NAME = "encode_image (projected image embedding, L2-normalised)"


@dataclass(frozen=True)
class ProbeConfig:
    """Which records a probe uses and how it fits."""

    dataset: str = "bp4d"  # a name of clef.data.DATASETS
    root: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # loader options
    fold: int = 1  # fit on the fold's training subjects, score on its test subjects
    frame_stride: int = 1  # keep every n-th frame of each video (consecutive frames are near duplicates)
    batch_size: int = 256
    workers: int = 0  # DataLoader decode processes for feature extraction
    C: float = 1.0  # inverse L2 strength of every logistic regression (scikit-learn's C)
    max_iter: int = 2000
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True)
class ProbeResult:
    """Probe scores in [0, 1] (None where the records do not allow that probe)."""

    au_f1: float | None
    au_f1_per_au: dict[int, float]
    expression_accuracy: float | None
    subject_accuracy: float | None
    subject_chance: float | None
    subject_nn_accuracy: float | None  # 1-nearest-neighbour (cosine) version of the subject-ID probe
    n_train: int
    n_test: int
    train_subjects: int
    test_subjects: int
    # Shares of the test embeddings' variance between subjects and between expressions (R², see
    # variance_share): a continuous identity measure that does not saturate like the classifiers.
    subject_variance_share: float | None = None
    expression_variance_share: float | None = None
    feature: str = FEATURE_NAME

    def summary(self) -> str:
        """One line: ``AU F1 0.512 | expression acc 0.431 | subject-ID acc 0.250 (chance 0.071) | ...``."""

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        chance = "" if self.subject_chance is None else f" (chance {self.subject_chance:.3f})"
        return (
            f"AU F1 {fmt(self.au_f1)} | expression acc {fmt(self.expression_accuracy)} | "
            f"subject-ID acc {fmt(self.subject_accuracy)}{chance}, 1-NN {fmt(self.subject_nn_accuracy)} | "
            f"{self.n_train} train frames of {self.train_subjects} subjects, "
            f"{self.n_test} test frames of {self.test_subjects} subjects"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["au_f1_per_au"] = {f"AU{k}": v for k, v in self.au_f1_per_au.items()}
        return out


def embedding_spread(features: np.ndarray) -> dict[str, float]:
    """How spread out N embeddings (N, D) are: the collapse check of a contrastive run.

    ``mean_cosine``: the mean cosine similarity over all pairs of different rows (1 when every row is
    the same direction, i.e. collapsed); ``effective_rank``: exp of the entropy of the normalised
    squared singular values of the centred rows (1 for points on a line, D for an isotropic cloud;
    Roy & Vetterli 2007). Rows need not be normalised (they are, for the cosine).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) embeddings, got shape {f.shape}")
    unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    n = len(f)
    cosine = (unit @ unit.T)[~np.eye(n, dtype=bool)].mean()
    sv = np.linalg.svd(f - f.mean(axis=0), compute_uv=False) ** 2
    if sv.sum() <= 0:  # every row the same: one point, rank 1 by convention of the formula's limit
        return {"mean_cosine": float(cosine), "effective_rank": 1.0}
    p = sv / sv.sum()
    p = p[p > 0]
    return {"mean_cosine": float(cosine), "effective_rank": float(np.exp(-(p * np.log(p)).sum()))}


def variance_share(features: np.ndarray, groups: np.ndarray) -> float | None:
    """Share of the features' total variance that lies between the groups' means (R² of a one-way
    ANOVA summed over dimensions): SS_between / SS_total, in [0, 1].

    Rows whose group is missing (NA) are left out; None when fewer than two groups or no variance
    remain. With ``groups`` = subjects it says how much of a representation is identity, with
    expressions how much is expression; unlike a classifier's accuracy it does not saturate.
    """
    keep = ~pd.isna(groups)
    f = np.asarray(features, dtype=np.float64)[keep]
    g = np.asarray(groups)[keep].astype(str)
    if len(set(g)) < 2:
        return None
    total = ((f - f.mean(axis=0)) ** 2).sum()
    if total <= 0:
        return None
    labels, index = np.unique(g, return_inverse=True)
    counts = np.bincount(index)
    means = np.zeros((len(labels), f.shape[1]))
    np.add.at(means, index, f)
    means /= counts[:, None]
    between = (counts[:, None] * (means - f.mean(axis=0)) ** 2).sum()
    return float(between / total)


def subsample_frames(records: pd.DataFrame, stride: int) -> pd.DataFrame:
    """Every ``stride``-th frame of each (subject, activity) video, in frame order; stills are kept."""
    if stride < 1:
        raise UserError(f"frame stride must be at least 1, got {stride}")
    if stride == 1 or records.empty:
        return records.reset_index(drop=True)
    keys = records[["subject", "activity"]].astype("string").fillna("<na>")
    order = records.assign(_s=keys["subject"], _a=keys["activity"]).sort_values(
        ["_s", "_a", "frame"], kind="stable"
    )
    position = order.groupby(["_s", "_a"], sort=False).cumcount()
    keep = order.index[(position % stride == 0).to_numpy()]
    return records.loc[sorted(keep)].reset_index(drop=True)


@torch.inference_mode()
def extract_features(
    model,
    records: pd.DataFrame,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    workers: int = 0,
    progress: bool = True,
    desc: str = "features",
) -> np.ndarray:
    """Frozen image embeddings of ``records`` -> float32 (N, D), rows in record order.

    The model is moved to ``device`` and put in eval mode; decoding and normalisation are those of
    :func:`clef.inference.embed_images`.
    """
    from clef.inference import embed_images

    device = torch.device(device)
    model.eval().to(device)
    return embed_images(model, records, batch_size, device, workers, progress, desc=desc).numpy()


def subject_split(records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (fit, score) row masks of the subject-ID probe (see the module docstring).

    Each subject's activities, sorted, are dealt alternately: even positions fit, odd positions
    score. Subjects with fewer than two activities are in neither mask.
    """
    fit = np.zeros(len(records), dtype=bool)
    score = np.zeros(len(records), dtype=bool)
    subjects = records["subject"].astype("string").to_numpy()
    activities = records["activity"].astype("string").to_numpy()
    frame = pd.DataFrame({"s": subjects, "a": activities}).dropna()
    for _, group in frame.groupby("s"):
        acts = sorted(group["a"].unique())
        if len(acts) < 2:
            continue
        for i, act in enumerate(acts):
            rows = group.index[group["a"] == act].to_numpy()
            (fit if i % 2 == 0 else score)[rows] = True
    return fit, score


def _logistic(C: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))


def _classify(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_score: np.ndarray,
    y_score: np.ndarray,
    cfg: ProbeConfig,
    seed: int,
) -> float | None:
    """Accuracy of a multinomial LR; None when fitting has < 2 classes or scoring is empty."""
    from clef.metrics import accuracy

    if len(np.unique(y_fit)) < 2 or len(y_score) == 0:
        return None
    clf = _logistic(cfg.C, cfg.max_iter, seed).fit(x_fit, y_fit)
    return float(accuracy(clf.predict(x_score), y_score))


def _nearest_neighbour_accuracy(
    x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, y_score: np.ndarray
) -> float | None:
    """Share of scoring rows whose most cosine-similar fitting row has the same label (None if empty).

    Parameter-free, so it cannot saturate through a flexible classifier: it asks whether identity
    dominates the geometry of the embedding, which is what a contrastive loss shapes.
    """
    if len(x_fit) == 0 or len(x_score) == 0:
        return None

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    nearest = (unit(x_score) @ unit(x_fit).T).argmax(axis=1)
    return float(np.mean(np.asarray(y_fit)[nearest] == np.asarray(y_score)))


def probe_features(
    train_features: np.ndarray,
    train_records: pd.DataFrame,
    test_features: np.ndarray,
    test_records: pd.DataFrame,
    cfg: ProbeConfig = ProbeConfig(),
    seed: int = 0,
) -> ProbeResult:
    """Fit the probes on (train features, records) and score them on the test side.

    ``*_features``: (N, D) arrays whose rows match the record tables' rows.

    Raises:
        UserError: the two sides share a subject, or the shapes do not match the tables.
    """
    from threadpoolctl import threadpool_limits

    from clef.data.folds import assert_subject_exclusive

    assert_subject_exclusive(train_records, test_records)
    # The regressions are small (thousands x hundreds): multi-threaded BLAS only oversubscribes the
    # cores (measured 40x slower for one multinomial fit on a busy 2-core machine), so use one thread.
    with threadpool_limits(1):
        return _probe_features(train_features, train_records, test_features, test_records, cfg, seed)


def _probe_features(
    train_features: np.ndarray,
    train_records: pd.DataFrame,
    test_features: np.ndarray,
    test_records: pd.DataFrame,
    cfg: ProbeConfig,
    seed: int,
) -> ProbeResult:
    from clef.data.records import au_targets, record_aus
    from clef.metrics import au_f1

    for name, feats, recs in (
        ("train", train_features, train_records),
        ("test", test_features, test_records),
    ):
        if len(feats) != len(recs):
            raise UserError(f"{name}: {len(feats)} feature rows for {len(recs)} records")
    if len(train_records) == 0 or len(test_records) == 0:
        raise UserError("the probe needs frames on both the training and the test side")

    # AU detection: one binary LR per AU, masked (uncoded) frames excluded from fit and score.
    aus = tuple(a for a in record_aus(train_records) if a in record_aus(test_records))
    per_au: dict[int, float] = {}
    if aus:
        y_tr, m_tr = au_targets(train_records, aus)
        y_te, m_te = au_targets(test_records, aus)
        prob = np.zeros(y_te.shape, dtype=np.float64)
        usable = []
        for j in range(len(aus)):
            if not m_te[:, j].any() or not m_tr[:, j].any():
                continue  # never coded on one side: no score for this AU
            usable.append(j)
            labels = y_tr[m_tr[:, j], j]
            if labels.min() == labels.max():
                prob[:, j] = labels[0]  # one class in training: the constant prediction
                continue
            clf = _logistic(cfg.C, cfg.max_iter, seed).fit(train_features[m_tr[:, j]], labels)
            prob[:, j] = clf.predict_proba(test_features)[:, 1]
        f1 = au_f1(prob >= 0.5, y_te, m_te)
        per_au = {aus[j]: float(f1[j]) for j in usable}
    au_mean = float(np.mean(list(per_au.values()))) if per_au else None

    # Expression: multinomial LR over the expression names present in training.
    expression_acc = None
    if "expression" in train_records and "expression" in test_records:
        e_tr = train_records["expression"].astype("string").to_numpy()
        e_te = test_records["expression"].astype("string").to_numpy()
        ok_tr, ok_te = ~pd.isna(e_tr), ~pd.isna(e_te)
        expression_acc = _classify(
            train_features[ok_tr],
            e_tr[ok_tr].astype(str),
            test_features[ok_te],
            e_te[ok_te].astype(str),
            cfg,
            seed,
        )

    # Identity: within the test subjects, fit on half of each subject's videos, score on the others.
    fit, score = subject_split(test_records)
    subjects = test_records["subject"].astype("string").to_numpy()
    n_id = len(set(subjects[fit | score]))
    subject_acc = _classify(
        test_features[fit],
        subjects[fit].astype(str),
        test_features[score],
        subjects[score].astype(str),
        cfg,
        seed,
    )
    return ProbeResult(
        au_f1=au_mean,
        au_f1_per_au=per_au,
        expression_accuracy=expression_acc,
        subject_accuracy=subject_acc,
        subject_nn_accuracy=_nearest_neighbour_accuracy(
            test_features[fit], subjects[fit], test_features[score], subjects[score]
        ),
        subject_chance=(1.0 / n_id) if subject_acc is not None and n_id else None,
        n_train=len(train_records),
        n_test=len(test_records),
        train_subjects=int(train_records["subject"].nunique()),
        test_subjects=int(test_records["subject"].nunique()),
        subject_variance_share=variance_share(test_features, subjects),
        expression_variance_share=(
            variance_share(test_features, test_records["expression"].astype("string").to_numpy())
            if "expression" in test_records
            else None
        ),
    )


def load_probe_records(cfg: ProbeConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) record tables of ``cfg``'s dataset and fold, subsampled by ``cfg.frame_stride``."""
    from clef.data import load_dataset
    from clef.data.folds import split_fold

    if not cfg.root:
        raise UserError("the probe needs the dataset folder (root)")
    records = load_dataset(cfg.dataset, cfg.root, **cfg.options)
    train, test = split_fold(records, cfg.fold)
    return subsample_frames(train, cfg.frame_stride), subsample_frames(test, cfg.frame_stride)


def probe_model(
    model,
    cfg: ProbeConfig,
    seed: int = 0,
    records: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    log: Callable[[str], None] | None = None,
) -> ProbeResult:
    """Extract frozen features of ``model`` on ``cfg``'s fold and run :func:`probe_features`.

    ``records``: an already loaded (train, test) pair (default: :func:`load_probe_records`).
    """
    train, test = records if records is not None else load_probe_records(cfg)
    if log:
        log(f"probe: {len(train)} train frames, {len(test)} test frames (fold {cfg.fold})")
    kw = dict(batch_size=cfg.batch_size, device=cfg.device, workers=cfg.workers, progress=cfg.progress)
    f_train = extract_features(model, train, desc="train features", **kw)
    f_test = extract_features(model, test, desc="test features", **kw)
    return probe_features(f_train, train, f_test, test, cfg, seed)
