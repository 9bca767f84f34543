"""Hostile and careless dataset files: each refused with our DatasetError naming the file and the line.

Every file is written as real bytes, then read by ``load_dataset`` in a child process (a crash in a
parser, such as pyarrow's on garbage, would kill the child, not the test run), each case under its
own alarm and the child under a timeout. Before the readers in ``tasks/readers.py``: a non-UTF-8
byte or a bad JSON line gave "An error occurred while generating the dataset" (no line), a
non-UTF-8 JSON Lines file a bare ``UnicodeDecodeError`` (no file), an empty .jsonl an empty message,
and float or boolean labels "mixes label types".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


# name -> (file bytes, what the message must say besides the file's path)
CASES: dict[str, tuple[bytes, str]] = {
    "bad_byte.csv": (
        b"text,label\ngood film,pos\nbad \xff film,neg\nok,pos\n",
        "line 3, column 5: byte(s) ff are not UTF-8",
    ),
    "latin1.csv": (
        "text,label\nfine,pos\ngood,neg\ncafé crème,pos\n".encode("latin-1"),
        "line 4, column 4: byte(s) e9",
    ),
    "utf16.csv": ("text,label\nfine,pos\n".encode("utf-16"), "line 1, column 1: byte(s) ff are not UTF-8"),
    "bad_byte.jsonl": (b'{"text": "a", "label": "x"}\n{"text": "b\xc3(", "label": "y"}\n', "line 2, column 12"),
    "truncated.jsonl": (
        b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{"text": "c", "lab\n',
        "line 3, column 15: not valid JSON (Unterminated string",
    ),
    "array_line.jsonl": (b'{"text": "a", "label": "x"}\n[1, 2]\n', "line 2: expected a JSON object, got an array"),
    "empty.jsonl": (b"", "no rows (the file holds nothing)"),
    "blank_lines.jsonl": (b"\n  \n\n", "no rows"),
    "empty.csv": (b"", "no rows (the file holds nothing)"),
    "header_only.csv": (b"text,label\n", "no rows (the file holds a header only)"),
    "extra_field.csv": (b"text,label\nfine,pos\ngood, really good,neg\n", "line 3: 3 fields, the header has 2"),
    "object.json": (b'{"text": "a", "label": "x"}', "expected a JSON array of objects or JSON Lines, got an object"),
    "truncated.json": (b'[{"text": "a", "label": "x"},\n {"text": "b", ', "line 2, column 16: not valid JSON"),
    "garbage.parquet": (b"PAR1 this is not a parquet file PAR1", "cannot be read as parquet"),
    "float_labels.jsonl": (
        _jsonl([{"text": f"review {i}", "label": float(i % 2)} for i in range(6)]),
        "labels are floats ([0.0, 1.0]), and float labels are not class labels; round them",
    ),
    "float_labels.csv": (b"text,label\na,0.5\nb,1.5\nc,0.5\n", "labels are floats ([0.5, 1.5])"),
    "bool_labels.jsonl": (
        _jsonl([{"text": f"review {i}", "label": i % 2 == 0} for i in range(6)]),
        "labels are booleans (true/false), not class labels",
    ),
    "typo_labels.jsonl": (
        _jsonl(
            [
                {"text": f"review {i}", "label": ["fresh", "Fresh", "fresh ", "rotten", "rotton"][i % 5]}
                for i in range(20)
            ]
        ),
        "labels look like typos of each other: ['Fresh' (4 rows), 'fresh' (4 rows), 'fresh ' (4 rows)]; "
        "['rotten' (4 rows), 'rotton' (4 rows)]",
    ),
}

CHILD = """
import json, signal, sys
from tasks.data import load_dataset
results = {}
for path in sys.argv[1:]:
    signal.alarm(30)  # one case may not hang the rest
    try:
        load_dataset.fn(path)
        results[path] = {"type": None, "message": "loaded"}
    except Exception as error:
        results[path] = {"type": type(error).__name__, "mro": [c.__name__ for c in type(error).__mro__], "message": str(error)}
    signal.alarm(0)
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bad-data")
    paths = []
    for name, (content, _) in CASES.items():
        (directory / name).write_bytes(content)
        paths.append(str(directory / name))
    env_home = directory / "home"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *paths],
        cwd=REPO,
        env={**os.environ, "MODELCORE_PIPELINE_HOME": str(env_home)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULTS "))[8:])
    return {Path(path).name: (path, result) for path, result in results.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_file_is_refused_naming_the_file_and_the_row(outcomes, name):
    path, result = outcomes[name]
    assert result["type"] == "DatasetError" and "DataError" in result["mro"], result
    assert path in result["message"], result["message"]
    assert CASES[name][1] in result["message"], result["message"]
