"""UserError: one line in the shared shape, whatever it is built from."""

import pickle

import pytest
import torch

from clef.errors import UserError, format_problem


def test_a_finished_message_is_kept_as_it_is():
    err = UserError("config file x.yaml does not exist")
    assert str(err) == "config file x.yaml does not exist" and err.file is None and err.line is None


def test_parts_are_assembled_in_one_shape():
    err = UserError("label '9' is out of range", file="a/list.txt", line=12, expected="1-7", choices=[1, 7])
    assert str(err) == "a/list.txt, line 12: label '9' is out of range; expected 1-7; valid: 1, 7"
    assert (err.reason, err.file, err.line, err.expected, err.choices) == (
        "label '9' is out of range",
        "a/list.txt",
        12,
        "1-7",
        (1, 7),
    )
    assert format_problem("no such file", file="b.csv") == "b.csv: no such file"


def test_text_over_several_lines_becomes_one():
    err = UserError("weights do not fit:\n\tsize mismatch for a\n\tsize mismatch for b\n")
    assert str(err) == "weights do not fit: size mismatch for a size mismatch for b"


def test_it_survives_pickling_as_multiprocessing_does():
    err = pickle.loads(pickle.dumps(UserError("bad row", file="x.csv", line=3)))
    assert isinstance(err, UserError) and str(err) == "x.csv, line 3: bad row"


class _Failing(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise UserError(f"cannot read the image of record {i}", file=f"/data/{i}.png")


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_from_a_loader_worker_arrives_as_its_one_line(workers):
    loader = torch.utils.data.DataLoader(_Failing(), batch_size=1, num_workers=workers)
    with pytest.raises(UserError) as caught:
        next(iter(loader))
    assert str(caught.value) == "/data/0.png: cannot read the image of record 0"
