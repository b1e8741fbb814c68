"""Readers of users' text files: UTF-8 with the line of a bad byte, strict YAML, JSON with lines."""

import pytest

from clef.errors import UserError
from clef.textfiles import load_json, load_yaml, not_utf8, parse_yaml, read_text


def test_read_text_drops_a_byte_order_mark_and_names_missing_files(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfhello\n")
    assert read_text(tmp_path / "a.txt") == "hello\n"
    with pytest.raises(UserError, match=r"missing.txt: no such file$"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(UserError, match=r": is a folder, not a file$"):
        read_text(tmp_path)


@pytest.mark.parametrize(
    "data, line, column, byte",
    [
        (b"ok\nalso ok\nnot \xe9 ok\n", 3, 5, 0xE9),
        (b"\xef\xbb\xbfok\n\xff", 2, 1, 0xFF),  # the mark counts as bytes of line 1, not as an error
        (b"\xc3", 1, 1, 0xC3),  # a multi-byte character cut short at the end of the file
    ],
)
def test_the_first_byte_that_is_not_utf8_is_located(tmp_path, data, line, column, byte):
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    expected = f"{path}, line {line}: not UTF-8 text (byte 0x{byte:02x}, column {column}); save it as UTF-8"
    with pytest.raises(UserError) as caught:
        read_text(path)
    assert str(caught.value) == expected and str(not_utf8(path)) == expected


def test_yaml_keys_given_twice_are_errors_with_both_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\n")
    with pytest.raises(UserError, match=r"c.yaml, line 5: key 'x' is given twice \(first on line 3\)$"):
        load_yaml(path)
    with pytest.raises(UserError, match=r"key 'a' is given twice \(first on line 1\)"):
        parse_yaml("{a: 1, a: 2}", "override")
    # A merge brings keys in on purpose; overriding one of them is what merges are for.
    assert parse_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  x: 3\n", "m")["c"] == {"x": 3, "y": 2}
    assert load_yaml(_write(tmp_path / "e.yaml", "")) is None


def test_yaml_and_json_syntax_errors_name_the_line(tmp_path):
    with pytest.raises(
        UserError, match=r"y.yaml, line 2: not valid YAML: mapping values are not allowed here$"
    ):
        load_yaml(_write(tmp_path / "y.yaml", "a: 1\n b: 2\n"))
    with pytest.raises(UserError, match=r"j.json, line 3: not valid JSON \(Expecting value, column 7\)$"):
        load_json(_write(tmp_path / "j.json", '{\n "a": 1,\n "b": }\n'))


def _write(path, text):
    path.write_text(text)
    return path
