"""Loaders for the paper's data sets from local files (JSON, JSONL or CSV).

Every loader checks the columns it needs and says which file, which row and which column is
wrong (``ConfigError``); none of them downloads anything. Columns:

=============  ==========================================================================
data set       columns (JSON object keys, or a CSV header row)
=============  ==========================================================================
BBH            ``input``, ``target``; also BBH's own ``{"examples": [...]}`` JSON file
GSM8K          ``question``, ``answer`` (the final answer follows ``#### ``, as in GSM8K)
MMLU           ``question``, ``choices`` (a list), ``answer`` (an index or a letter);
               or ``question``, ``A``, ``B``, ``C``, ``D``, ``answer``; a CSV without a
               header row in MMLU's original six-column layout is read as the latter
GPQA           ``Question``, ``Correct Answer``, ``Incorrect Answer 1`` .. ``3``
LeetCode-Hard  ``task_id``, ``prompt``, ``test`` (a list of assert lines, or one string of
               them separated by newlines); ``entry_point`` optional
=============  ==========================================================================

A data path must be a regular file (not a folder, device, FIFO or socket) of at most
:data:`MAX_DATA_BYTES` (1 GiB); JSON-lines and CSV files are read one line at a time and may hold
at most :data:`MAX_DATA_RECORDS` (1,000,000) records; a ``.json`` file is parsed whole, within the
same limits. Anything beyond them is a ``ConfigError`` naming the limit, raised before the memory
is spent.

>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "bbh.json"
>>> _ = path.write_text(json.dumps({"examples": [{"input": "q", "target": "1"}]}))
>>> load_bbh(path)
[QA(question='q', answer='1')]
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from asynctg.errors import ConfigError
from asynctg.prompts import multiple_choice_query
from asynctg.tasks.types import QA, CodeProblem, MultipleChoice

_Row = TypeVar("_Row", covariant=True)

__all__ = [
    "MAX_DATA_BYTES",
    "MAX_DATA_RECORDS",
    "file_digest",
    "gpqa_questions",
    "gsm8k_final_answer",
    "load_bbh",
    "load_gpqa",
    "load_gsm8k",
    "load_leetcode",
    "load_mmlu",
    "read_rows",
]

Row = Mapping[str, Any]

#: The largest data file read, in bytes (1 GiB): a bigger one is refused before any of it is
#: read. Pass a sample of the data set, or split it.
MAX_DATA_BYTES = 1 << 30
#: The most records read from one data file: reading stops with a ``ConfigError`` past this.
MAX_DATA_RECORDS = 1_000_000

_MMLU_COLUMNS = ("question", "A", "B", "C", "D", "answer")


def _size_text(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _check_stat(path: Path, info: os.stat_result) -> None:
    """ConfigError unless ``info`` is a regular file within :data:`MAX_DATA_BYTES`."""
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} is a folder; pass the data file itself")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(
            f"{path} is {_file_kind(info.st_mode)}, not a regular file; data is read from a "
            "file saved on disk (JSON, JSON lines or CSV)"
        )
    if info.st_size > MAX_DATA_BYTES:
        raise ConfigError(
            f"{path} is {info.st_size:,} bytes, over the {_size_text(MAX_DATA_BYTES)} limit on "
            "data files (asynctg.tasks.files.MAX_DATA_BYTES); pass a sample of the data set"
        )


@contextmanager
def _open_data(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a data file for reading once it is known to be a regular file within the limits.

    The path is checked before it is opened (opening a FIFO would wait for a writer) and the
    open file again (the path may have been replaced in between). Text is UTF-8, a BOM dropped.
    """
    _check_path(path)
    try:
        # O_NONBLOCK: should the path have become a FIFO since, opening it does not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ConfigError(f"data file {path} does not exist; pass the path of your copy") from None
    except OSError as exc:
        raise ConfigError(f"cannot read data file {path}: {exc}") from exc
    try:
        _check_stat(path, os.fstat(fd))
        file: IO[Any] = open(fd, "rb") if binary else open(fd, encoding="utf-8-sig")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def _check_path(path: Path) -> None:
    """ConfigError unless ``path`` names a regular file within the limits (not opening it)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"data file {path} does not exist; pass the path of your copy") from None
    except OSError as exc:
        raise ConfigError(f"cannot read data file {path}: {exc}") from exc
    _check_stat(path, info)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (checkpoints use it to refuse resuming on other data)."""
    digest = hashlib.sha256()
    p = Path(path)
    with _open_data(p, binary=True) as f:
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        except OSError as exc:
            raise ConfigError(f"cannot read data file {p}: {exc}") from exc
    return digest.hexdigest()


def _too_many(path: Path) -> ConfigError:
    return ConfigError(
        f"{path} holds more than {MAX_DATA_RECORDS:,} records, the most read from one data file "
        "(asynctg.tasks.files.MAX_DATA_RECORDS); pass a sample of the data set"
    )


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The objects of a JSON-lines file, read one line at a time; blank lines are skipped."""
    with _open_data(path) as f:
        count = 0
        for number, line in enumerate(_lines(f, path), 1):
            if not line.strip():
                continue
            if count >= MAX_DATA_RECORDS:
                raise _too_many(path)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: line {number} is not JSON: {exc.msg}") from exc
            count += 1
            yield _object(row, path, f"line {number}")


def _lines(f: IO[str], path: Path) -> Iterator[str]:
    """The lines of an open text file, read errors as ConfigError."""
    try:
        yield from f
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read data file {path}: {exc}") from exc


def _csv_records(path: Path) -> Iterator[dict[str, Any]]:
    """A CSV file's records keyed by its header row (``csv.DictReader``'s rules), read a line
    at a time."""
    return (dict(row) for row in _csv(path, csv.DictReader))


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """A CSV file's rows as lists of cells (no header row), read a line at a time."""
    return _csv(path, csv.reader)


class _CSVReader(Protocol[_Row]):
    """What ``csv.reader`` and ``csv.DictReader`` both are: rows, and the line reached."""

    @property
    def line_num(self) -> int: ...

    def __iter__(self) -> Iterator[_Row]: ...

    def __next__(self) -> _Row: ...


def _csv(path: Path, make_reader: Callable[[Iterator[str]], _CSVReader[_Row]]) -> Iterator[_Row]:
    """The rows ``make_reader`` reads from a CSV file, a line at a time, within the record cap;
    parse errors as ConfigError naming the line."""
    with _open_data(path) as f:
        reader = make_reader(_lines(f, path))
        try:
            for count, row in enumerate(reader, 1):
                if count > MAX_DATA_RECORDS:
                    raise _too_many(path)
                yield row
        except csv.Error as exc:
            raise ConfigError(f"{path}: line {reader.line_num} is not CSV: {exc}") from exc


def _read_json(path: Path) -> Any:
    with _open_data(path) as f:
        try:
            text = f.read(MAX_DATA_BYTES + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read data file {path}: {exc}") from exc
    if len(text) > MAX_DATA_BYTES:  # the file grew since it was checked
        raise ConfigError(
            f"{path} is over the {_size_text(MAX_DATA_BYTES)} limit on data files "
            "(asynctg.tasks.files.MAX_DATA_BYTES); pass a sample of the data set"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from exc


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON (a list, or an object with ``examples``), JSONL or CSV file.

    The format is chosen by the suffix (``.json``, ``.jsonl``, ``.csv``); CSV cells stay text.
    JSON-lines and CSV files are read a line at a time; every file is held to
    :data:`MAX_DATA_BYTES` and :data:`MAX_DATA_RECORDS` (a ``ConfigError`` past either).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return list(_json_lines(p))
    if suffix == ".json":
        data = _read_json(p)
        if isinstance(data, dict) and isinstance(data.get("examples"), list):
            data = data["examples"]
        if not isinstance(data, list):
            raise ConfigError(f"{p}: expected a JSON list of records or {{'examples': [...]}}")
        if len(data) > MAX_DATA_RECORDS:
            raise _too_many(p)
        return [_object(row, p, f"record {i + 1}") for i, row in enumerate(data)]
    if suffix == ".csv":
        return list(_csv_records(p))
    _check_path(p)
    raise ConfigError(f"{p}: unknown data format {suffix!r}; use .json, .jsonl or .csv")


def _object(row: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ConfigError(f"{path}: {where} is a {type(row).__name__}, expected an object")
    return row


def _need(rows: Sequence[Row], columns: Sequence[str], path: Path, what: str) -> None:
    if not rows:
        raise ConfigError(f"{path} holds no records")
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row or row[c] is None]
        if missing:
            found = ", ".join(repr(k) for k in list(row)[:8]) or "none"
            raise ConfigError(
                f"{path}: record {i + 1} has no {', '.join(repr(c) for c in missing)} column; "
                f"a {what} file needs {', '.join(repr(c) for c in columns)} (found: {found})"
            )


def load_bbh(path: str | os.PathLike[str]) -> list[QA]:
    """A BIG-Bench Hard task file: (input, target) pairs in file order."""
    p = Path(path)
    rows = read_rows(p)
    _need(rows, ("input", "target"), p, "BBH")
    return [QA(str(r["input"]), str(r["target"])) for r in rows]


def gsm8k_final_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the number after ``#### ``, commas removed."""
    if "####" not in solution:
        return solution.strip()
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def load_gsm8k(path: str | os.PathLike[str]) -> list[QA]:
    """A GSM8K file: (question, final answer) pairs in file order."""
    p = Path(path)
    rows = read_rows(p)
    _need(rows, ("question", "answer"), p, "GSM8K")
    return [QA(str(r["question"]), gsm8k_final_answer(str(r["answer"]))) for r in rows]


def _letter(answer: Any, n: int, path: Path, i: int) -> str:
    text = str(answer).strip()
    if text.isdigit() and int(text) < n:
        return chr(65 + int(text))
    if len(text) == 1 and "A" <= text.upper() < chr(65 + n):
        return text.upper()
    raise ConfigError(
        f"{path}: record {i + 1} has answer {answer!r}; expected a letter A-{chr(64 + n)} or an "
        f"index 0-{n - 1}"
    )


def load_mmlu(path: str | os.PathLike[str]) -> list[MultipleChoice]:
    """An MMLU file (see the module docstring for the accepted layouts)."""
    p = Path(path)
    rows = read_rows(p)
    if p.suffix.lower() == ".csv" and rows and not {"question", "choices"} & set(rows[0]):
        if not set(_MMLU_COLUMNS) <= set(rows[0]):
            # MMLU's original CSVs have no header row: question, A, B, C, D, answer
            raw = list(_csv_rows(p))
            if raw and all(len(r) == 6 for r in raw):
                rows = [dict(zip(_MMLU_COLUMNS, r, strict=True)) for r in raw]
    out = []
    for i, row in enumerate(rows):
        if "choices" in row:
            _need([row], ("question", "choices", "answer"), p, "MMLU")
            choices = row["choices"]
            if isinstance(choices, str):
                try:
                    choices = json.loads(choices)
                except json.JSONDecodeError:
                    choices = None
            if not isinstance(choices, list) or len(choices) < 2:
                raise ConfigError(f"{p}: record {i + 1}: 'choices' must be a list of options")
        else:
            _need([row], _MMLU_COLUMNS, p, "MMLU")
            choices = [row[c] for c in "ABCD"]
        options = tuple(str(c) for c in choices)
        letter = _letter(row["answer"], len(options), p, i)
        query = multiple_choice_query(str(row["question"]), options)
        out.append(MultipleChoice(query, letter, options))
    if not out:
        raise ConfigError(f"{p} holds no records")
    return out


_GPQA_COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)


def load_gpqa(path: str | os.PathLike[str], *, seed: int = 0) -> list[MultipleChoice]:
    """A GPQA file; each question's options are shuffled by a generator seeded with ``seed``."""
    p = Path(path)
    return gpqa_questions(read_rows(p), seed, str(p))


def gpqa_questions(rows: Sequence[Row], seed: int, where: str) -> list[MultipleChoice]:
    """GPQA records as lettered questions, the options shuffled reproducibly from ``seed``."""
    _need(rows, _GPQA_COLUMNS, Path(where), "GPQA")
    rng = random.Random(f"asynctg-gpqa:{seed}")
    out = []
    for row in rows:
        correct = str(row["Correct Answer"]).strip()
        options = [correct, *(str(row[f"Incorrect Answer {k}"]).strip() for k in (1, 2, 3))]
        rng.shuffle(options)
        letter = chr(65 + options.index(correct))
        query = multiple_choice_query(str(row["Question"]).strip(), options)
        out.append(MultipleChoice(query, letter, tuple(options)))
    return out


def _tests(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        lines: Iterable[str] = value.split("\n")
    elif isinstance(value, list):
        lines = (str(v) for v in value)
    else:
        return ()
    return tuple(line.strip() for line in lines if line.strip())


def load_leetcode(path: str | os.PathLike[str]) -> list[CodeProblem]:
    """A LeetCode-Hard file (TextGrad's ``leetcode_with_tests.jsonl`` layout)."""
    p = Path(path)
    rows = read_rows(p)
    _need(rows, ("task_id", "prompt", "test"), p, "LeetCode-Hard")
    out = []
    for i, row in enumerate(rows):
        tests = _tests(row["test"])
        if not tests:
            raise ConfigError(f"{p}: record {i + 1} ({row['task_id']}) has no tests")
        out.append(
            CodeProblem(
                str(row["task_id"]), str(row["prompt"]), tests, str(row.get("entry_point") or "")
            )
        )
    return out
