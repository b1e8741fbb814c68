"""Checks that the built-in world has the properties the paper's argument needs.

Prints:
1. the share of pixel variance explained by *subject* vs. by *expression* (AU intensities), in a crossed
   design (every subject shows the same sampled expressions, lab nuisances) and on real world frames;
   subject must dominate, as in real data;
2. the base rate of each BP4D AU per activity, read back through the BP4D loader;
3. held-out-subject AU F1 of a simple classifier (PCA of 32x32 grey pixels + logistic regression) trained
   on a few thousand labelled frames of fold-1 training subjects, next to the all-positive baseline:
   the AU signal must be learnable (well above baseline) and far from perfect.

    python benchmarks/world_check.py [--world DIR]  # DIR from `clef synth`; default: render 41 subjects
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

from clef.data import load_dataset
from clef.data.folds import split_fold
from clef.data.records import au_targets
from clef.labels import ALL_AUS, BP4D_AUS, au_intensity_column
from clef.synth.emotions import EMOTIONS, sample_expression
from clef.synth.export import write_lab
from clef.synth.render import render_face, sample_nuisance
from clef.synth.world import WorldConfig, lab_subjects


def crossed_variance(n_subjects: int = 24, n_expressions: int = 24, seed: int = 0) -> tuple[float, float]:
    """Two-way decomposition: share of pixel variance of subject means and of expression means."""
    config = WorldConfig(seed=seed, lab_subjects=n_subjects)
    subjects = lab_subjects(config)
    rng = np.random.default_rng(seed)
    expressions = [
        sample_expression(EMOTIONS[1 + i % (len(EMOTIONS) - 1)], rng) for i in range(n_expressions)
    ]
    cube = np.zeros((n_subjects, n_expressions, config.size * config.size * 3))
    for s, subject in enumerate(subjects):
        for e, (au, side) in enumerate(expressions):
            nuisance = sample_nuisance(rng, "lab")
            cube[s, e] = (
                render_face(subject.identity, au, nuisance, config.size, side, rng).reshape(-1) / 255.0
            )
    total = cube.var(axis=(0, 1)).sum()
    subject_share = cube.mean(axis=1).var(axis=0).sum() / total
    expression_share = cube.mean(axis=0).var(axis=0).sum() / total
    return float(subject_share), float(expression_share)


def frame_features(paths: list[str], side: int = 32) -> np.ndarray:
    rows = [
        np.asarray(Image.open(p).convert("L").resize((side, side)), dtype=np.float32).reshape(-1) / 255
        for p in paths
    ]
    return np.stack(rows)


def observational_r2(records: pd.DataFrame, features: np.ndarray) -> tuple[float, float]:
    """R^2 of pixels regressed on subject one-hot vs. on the 17 AU intensities (and their squares)."""
    subjects = pd.get_dummies(records["subject"].astype(str)).to_numpy(np.float64)
    intensity = records[[au_intensity_column(a) for a in ALL_AUS]].to_numpy(np.float64)
    au_design = np.hstack([intensity, intensity**2])
    scores = []
    for design in (subjects, au_design):
        fitted = LinearRegression().fit(design, features).predict(design)
        scores.append(1.0 - ((features - fitted) ** 2).sum() / ((features - features.mean(0)) ** 2).sum())
    return float(scores[0]), float(scores[1])


def main() -> None:
    parser = argparse.ArgumentParser(description="Check the built-in world's properties.")
    parser.add_argument("--world", type=Path, help="a folder written by `clef synth` (uses its bp4d/)")
    parser.add_argument("--train-frames", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    subject_share, expression_share = crossed_variance(seed=args.seed)
    print("1. pixel variance explained (crossed design: 24 subjects x 24 expressions, lab nuisances)")
    print(f"   subject main effect    {subject_share:6.1%}")
    print(f"   expression main effect {expression_share:6.1%}")

    with tempfile.TemporaryDirectory() as tmp:
        if args.world is not None:
            root = args.world / "bp4d"
        else:
            root = Path(tmp) / "bp4d"
            write_lab(WorldConfig(seed=args.seed, frames_per_video=60), root, workers=2, progress=False)
        records = load_dataset("bp4d", root)
        rng = np.random.default_rng(args.seed)

        sample = records.iloc[rng.choice(len(records), size=min(3000, len(records)), replace=False)]
        subject_r2, au_r2 = observational_r2(sample, frame_features(list(sample["path"])))
        print(
            f"   on {len(sample)} world frames: R^2 of subject one-hot {subject_r2:.1%}, "
            f"of AU intensities {au_r2:.1%}"
        )

        print("\n2. AU base rate per activity (coded frames, BP4D AUs)")
        rates = records.groupby("activity")[[f"AU{a}" for a in BP4D_AUS]].mean()
        print((rates * 100).round(1).to_string())
        print(
            f"   uncoded (9) label share: "
            f"{records[[f'AU{a}' for a in BP4D_AUS]].isna().to_numpy().mean():.2%}"
        )
        print("   expression share per activity (side file):")
        shares = pd.crosstab(records["activity"], records["expression"], normalize="index")
        print((shares * 100).round(1).to_string())

        train, test = split_fold(records, 1)
        train = train.iloc[rng.choice(len(train), size=min(args.train_frames, len(train)), replace=False)]
        test = test.iloc[rng.choice(len(test), size=min(3000, len(test)), replace=False)]
        x_train, x_test = frame_features(list(train["path"])), frame_features(list(test["path"]))
        pca = PCA(n_components=100, random_state=args.seed).fit(x_train)
        scaler = StandardScaler().fit(pca.transform(x_train))
        z_train, z_test = scaler.transform(pca.transform(x_train)), scaler.transform(pca.transform(x_test))
        y_train, m_train = au_targets(train, BP4D_AUS)
        y_test, m_test = au_targets(test, BP4D_AUS)
        print(
            f"\n3. held-out-subject AU F1 (fold 1: {train['subject'].nunique()} train subjects, "
            f"{len(train)} frames -> {test['subject'].nunique()} test subjects, {len(test)} frames)"
        )
        print("   AU    base  F1(all-positive)  F1(PCA+logreg)")
        scores, baselines = [], []
        for j, au in enumerate(BP4D_AUS):
            tr, te = m_train[:, j], m_test[:, j]
            truth = y_test[te, j]
            rate = truth.mean()
            baseline = 2 * rate / (1 + rate) if rate > 0 else 0.0
            if len(np.unique(y_train[tr, j])) < 2:
                score = 0.0
            else:
                clf = LogisticRegression(max_iter=2000, class_weight="balanced", C=0.1)
                clf.fit(z_train[tr], y_train[tr, j])
                score = f1_score(truth, clf.predict(z_test[te]), zero_division=0.0)
            scores.append(score)
            baselines.append(baseline)
            print(f"   AU{au:<3d} {rate:5.1%}  {baseline:16.3f}  {score:14.3f}")
        print(f"   mean        {np.mean(baselines):16.3f}  {np.mean(scores):14.3f}")


if __name__ == "__main__":
    main()
