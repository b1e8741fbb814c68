"""The summary tables behind `clef data check`."""

import numpy as np
import pandas as pd

from clef.data.records import make_records
from clef.data.summary import au_table, expression_table, subject_leaks


def test_au_table_counts_only_coded_frames():
    rec = make_records({"AU1": np.array([1, 0, np.nan, 1]), "AU2": np.array([np.nan] * 4)}, 4)
    table = au_table(rec)
    assert table.loc["AU1"].tolist() == [3, 1, 2, round(2 / 3, 4)]
    assert table.loc["AU2", "coded"] == 0 and np.isnan(table.loc["AU2", "base rate"])


def test_subject_leaks_across_parts_and_splits():
    rec = make_records(
        {
            "subject": np.array(["A", "A", "B", "C"], dtype=object),
            "fold": np.array([1, 2, 3, 3], dtype=object),
            "split": np.array(["train", "train", "train", "test"], dtype=object),
        },
        4,
    )
    assert subject_leaks(rec) == ["subject A is in 2 parts"]
    rec.loc[3, "subject"] = "B"
    assert "subject B is in both the train and the test split" in subject_leaks(rec)


def test_expression_table_lists_every_class_in_order():
    rec = make_records({"expression": np.array(["fear", "fear", "neutral"], dtype=object)}, 3)
    table = expression_table(rec, classes=("surprise", "fear", "neutral"))
    assert list(table.index) == ["surprise", "fear", "neutral"]
    assert table["total"].tolist() == [0, 2, 1] and table["share"].sum() == 1
    assert expression_table(make_records({}, 2)) is None and isinstance(table, pd.DataFrame)
