"""Tasks: generated data, file loaders, splits, the DataLoader and the evaluation functions."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import sys
from pathlib import Path
from random import Random

import pytest

import asynctg as tg
from asynctg import tasks
from asynctg.errors import ConfigError
from asynctg.sim.answers import count_objects, default_answer
from asynctg.tasks import files

DATA = Path(__file__).resolve().parent / "data"  # small real samples: see data/README.md
BBH_COUNTING = DATA / "bbh" / "object_counting.json"
BBH_SORTING = DATA / "bbh" / "word_sorting.json"
GSM8K = DATA / "gsm8k" / "test.jsonl"


def _var(text: str) -> tg.Variable:
    return tg.Variable(text, requires_grad=False, role_description="text")


# --- generated tasks ------------------------------------------------------------------------


def test_generated_tasks_are_deterministic_per_seed() -> None:
    """The same seed gives the same questions; another seed gives others."""
    assert tasks.object_counting(20, seed=3) == tasks.object_counting(20, seed=3)
    assert tasks.object_counting(20, seed=3) != tasks.object_counting(20, seed=4)
    assert tasks.word_sorting(20, seed=3) == tasks.word_sorting(20, seed=3)
    assert tasks.arithmetic_choice(5, seed=1) == tasks.arithmetic_choice(5, seed=1)


def test_generated_object_counting_answers_are_right() -> None:
    """Each generated answer is the count of the asked category (checked by an independent
    counter: the simulator's, which knows BBH's vocabulary)."""
    for qa in tasks.object_counting(200, seed=0):
        assert qa.question.startswith("I have ") and qa.question.endswith("do I have?")
        counted = count_objects(qa.question)
        assert counted is not None
        assert str(counted[0]) == qa.answer, qa


def test_generated_word_sorting_is_in_bbh_format() -> None:
    """Questions read 'Sort the following words alphabetically: List: ...'; answers sorted."""
    for qa in tasks.word_sorting(50, seed=0):
        listed = qa.question.split("List: ", 1)[1].split()
        assert qa.answer == " ".join(sorted(listed))
        assert len(set(listed)) == len(listed) >= 3


def test_arithmetic_choice_answer_letter_points_at_the_value() -> None:
    """The correct letter's option is the arithmetic's value."""
    for q in tasks.arithmetic_choice(30, seed=2):
        expression = q.query.split("What is ", 1)[1].split("?", 1)[0]
        assert q.choices["ABCD".index(q.answer)] == str(eval(expression))
        assert "Answer: $LETTER" in q.query


def test_get_task_sizes_and_sources() -> None:
    """Generated splits have the asked sizes and independent contents; the source names them."""
    task = tasks.get_task("word_sorting", train_size=5, val_size=3, test_size=4, data_seed=9)
    assert isinstance(task, tasks.PromptTask)
    assert task.sizes() == {"train": 5, "val": 3, "test": 4}
    assert task.evaluation == "judge"  # word sorting is judged by an LLM in the paper
    assert "seed=9" in task.source
    assert not set(task.train) & set(task.test)
    again = tasks.get_task("word_sorting", train_size=50, val_size=3, test_size=4, data_seed=9)
    assert isinstance(again, tasks.PromptTask)
    assert list(again.test) == list(task.test)  # the test set does not depend on train size
    assert tasks.get_task("object_counting", evaluation="exact_words").evaluation == "exact_words"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "unknown task 'nope'"),
        ({"name": "gsm8k"}, "needs its data"),
        ({"name": "object_counting", "train_size": -1}, "train size must be"),
        ({"name": "object_counting", "evaluation": "vibes"}, "evaluation must be one of"),
        ({"name": "mmlu", "data": "x.csv", "evaluation": "judge"}, "--eval applies"),
        ({"name": "object_counting", "train_size": 0}, "no training examples"),
    ],
)
def test_get_task_refuses_bad_requests(kwargs: dict[str, object], message: str) -> None:
    """Unknown tasks, missing data and bad sizes are ConfigErrors that say what to do."""
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=message):
        tasks.get_task(str(name), **kwargs)  # type: ignore[arg-type]


# --- loaders on local files -----------------------------------------------------------------


def test_bbh_file_loads_with_the_papers_split() -> None:
    """BBH's JSON splits 50 / 100 / rest in file order; targets are the file's."""
    raw = json.loads(BBH_COUNTING.read_text())["examples"]
    task = tasks.get_task("object_counting", data=str(BBH_COUNTING))
    assert isinstance(task, tasks.PromptTask)
    assert task.sizes() == {"train": 50, "val": 100, "test": len(raw) - 150}
    assert task.train[0] == tasks.QA(raw[0]["input"], raw[0]["target"])
    assert task.test[-1].answer == raw[-1]["target"]
    assert task.source.startswith("file:sha256=")


def test_bbh_word_sorting_file_matches_the_generated_format() -> None:
    """Real word-sorting questions have the shape the generator and the simulator use."""
    task = tasks.get_task("word_sorting", data=str(BBH_SORTING), test_size=5)
    assert isinstance(task, tasks.PromptTask)
    for qa in task.train[:10]:
        assert qa.question.startswith("Sort the following words alphabetically: List: ")
    assert len(task.test) == 5


def test_gsm8k_file_loads_final_answers(tmp_path: Path) -> None:
    """GSM8K answers become the number after '#### '; one file splits 200 / 300 / rest."""
    lines = [line for line in GSM8K.read_text().splitlines() if line.strip()]
    assert len(lines) == 200  # the sample: GSM8K's test split, first 200 lines
    answers = {}
    for line in lines:
        row = json.loads(line)
        answers[row["question"]] = row["answer"].rsplit("####", 1)[1].strip()
    task = tasks.get_task("gsm8k", data=str(GSM8K))
    assert isinstance(task, tasks.PromptTask)
    assert task.sizes() == {"train": 200, "val": 0, "test": 0}
    for qa in task.train:
        assert qa.answer == answers[qa.question].replace(",", "")
        assert qa.answer.lstrip("-").isdigit()
    # the same real lines three times over: enough for all three splits
    tripled = tmp_path / "gsm8k.jsonl"
    tripled.write_text("\n".join(lines * 3) + "\n")
    task = tasks.get_task("gsm8k", data=str(tripled))
    assert isinstance(task, tasks.PromptTask)
    assert task.sizes() == {"train": 200, "val": 300, "test": 100}
    assert all(qa.answer == answers[qa.question].replace(",", "") for qa in task.test)


def test_gsm8k_folder_uses_the_dspy_split(tmp_path: Path) -> None:
    """A folder with train.jsonl and test.jsonl: 200 train / 300 val from train, all of test."""
    for name, n in (("train.jsonl", 600), ("test.jsonl", 7)):
        lines = [
            json.dumps({"question": f"{name} q{i}", "answer": f"x #### {i}"}) for i in range(n)
        ]
        (tmp_path / name).write_text("\n".join(lines))
    task = tasks.get_task("gsm8k", data=str(tmp_path))
    assert task.sizes() == {"train": 200, "val": 300, "test": 7}


def test_jsonl_and_csv_loaders(tmp_path: Path) -> None:
    """BBH data loads from JSONL and CSV as well as from BBH's JSON."""
    jsonl = tmp_path / "bbh.jsonl"
    jsonl.write_text('{"input": "q1", "target": "1"}\n\n{"input": "q2", "target": "2"}\n')
    assert tasks.load_bbh(jsonl) == [tasks.QA("q1", "1"), tasks.QA("q2", "2")]
    path = tmp_path / "bbh.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["input", "target"], ["q, with comma", "3"]])
    assert tasks.load_bbh(path) == [tasks.QA("q, with comma", "3")]


def test_mmlu_layouts(tmp_path: Path) -> None:
    """MMLU reads choices lists, A-D columns, and headerless six-column CSVs."""
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1}))
    (q,) = tasks.load_mmlu(jsonl)
    assert q.answer == "B" and q.choices == ("3", "4", "5", "6")
    assert "(B) 4" in q.query and "Answer: $LETTER" in q.query
    headed = tmp_path / "h.csv"
    headed.write_text("question,A,B,C,D,answer\n2+3?,5,6,7,8,A\n")
    assert tasks.load_mmlu(headed)[0].answer == "A"
    bare = tmp_path / "bare.csv"
    bare.write_text("2+3?,4,6,5,8,C\n1+1?,2,3,4,5,A\n")
    loaded = tasks.load_mmlu(bare)
    assert [x.answer for x in loaded] == ["C", "A"]


def test_gpqa_shuffles_options_reproducibly(tmp_path: Path) -> None:
    """GPQA's correct answer lands on a seeded letter, the same on every load."""
    path = tmp_path / "gpqa.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question", "Correct Answer", *(f"Incorrect Answer {k}" for k in (1, 2, 3))])
        for i in range(12):
            w.writerow([f"Q{i}", "right", "w1", "w2", "w3"])
    first = tasks.load_gpqa(path, seed=1)
    assert first == tasks.load_gpqa(path, seed=1)
    assert {q.choices["ABCD".index(q.answer)] for q in first} == {"right"}
    assert len({q.answer for q in first}) > 1  # not always the same letter


def test_leetcode_tests_as_list_or_lines(tmp_path: Path) -> None:
    """LeetCode-Hard tests may be a list of asserts or one newline-separated string."""
    path = tmp_path / "lc.jsonl"
    rows = [
        {"task_id": "a", "prompt": "def a(): ...", "test": ["assert a() == 1", "assert a() != 2"]},
        {"task_id": "b", "prompt": "def b(): ...", "test": "assert b() == 1\n\nassert b()\n"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    a, b = tasks.load_leetcode(path)
    assert a.tests == ("assert a() == 1", "assert a() != 2")
    assert b.tests == ("assert b() == 1", "assert b()")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("b.json", '{"examples": [{"question": "q", "answer": "1"}]}', "no 'input', 'target'"),
        ("b.jsonl", '{"input": "q"}\n', "no 'target' column"),
        ("b.jsonl", "not json\n", "line 1 is not JSON"),
        ("b.csv", "question,answer\nq,1\n", "a BBH file needs 'input', 'target'"),
        ("b.txt", "x", "unknown data format"),
        ("b.json", "[]", "holds no records"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, name: str, content: str, message: str) -> None:
    """Wrong columns, bad JSON, unknown formats and empty files are clear ConfigErrors."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        tasks.get_task("object_counting", data=str(path))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A data path that does not exist names itself."""
    with pytest.raises(ConfigError, match="does not exist"):
        tasks.get_task("mmlu", data=str(tmp_path / "nope.csv"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_fifo_or_a_device_as_data_is_refused_without_reading_it(tmp_path: Path) -> None:
    """A FIFO (which would block on open) or /dev/zero (endless) is a ConfigError at once."""
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"FIFO \(named pipe\), not a regular file"):
        tasks.get_task("gsm8k", data=str(fifo))
    with pytest.raises(ConfigError, match="not a regular file"):
        files.file_digest(fifo)
    zero = Path("/dev/zero")
    if zero.exists():
        with pytest.raises(ConfigError, match="/dev/zero is a device, not a regular file"):
            tasks.get_task("mmlu", data=str(zero))
        for load in (tasks.load_bbh, tasks.load_mmlu, tasks.load_leetcode, files.file_digest):
            with pytest.raises(ConfigError, match="not a regular file"):
                load(zero)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_a_data_file_over_the_size_limit_is_refused_unread(tmp_path: Path, suffix: str) -> None:
    """A file over MAX_DATA_BYTES (1 GiB; a sparse file here) is refused, naming the limit."""
    big = tmp_path / f"big{suffix}"
    with big.open("wb") as f:
        f.truncate(files.MAX_DATA_BYTES + 1)  # sparse: no disk or memory is spent
    with pytest.raises(ConfigError, match=r"over the 1 GiB limit .*MAX_DATA_BYTES"):
        tasks.get_task("object_counting", data=str(big))
    with pytest.raises(ConfigError, match="MAX_DATA_BYTES"):
        files.file_digest(big)


def test_the_size_limit_admits_a_file_of_exactly_that_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_DATA_BYTES is inclusive: a file of that many bytes loads; one byte more does not."""
    path = tmp_path / "bbh.jsonl"
    path.write_text('{"input": "q1", "target": "1"}\n')
    monkeypatch.setattr(files, "MAX_DATA_BYTES", path.stat().st_size)
    assert tasks.load_bbh(path) == [tasks.QA("q1", "1")]
    monkeypatch.setattr(files, "MAX_DATA_BYTES", path.stat().st_size - 1)
    with pytest.raises(ConfigError, match="over the 30 bytes limit"):
        tasks.load_bbh(path)


def test_reading_stops_past_the_record_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSONL and CSV are streamed: past MAX_DATA_RECORDS reading stops with a ConfigError, before
    the (unreadable) rest of the file is reached; JSON is counted too."""
    monkeypatch.setattr(files, "MAX_DATA_RECORDS", 3)
    # read whole, the file would fail on these bytes; read a line at a time, it stops before
    unreadable = b"\n" * (1 << 18) + b"\xff\xfe not UTF-8, never decoded\n"
    jsonl = tmp_path / "bbh.jsonl"
    records = [b'{"input": "q%d", "target": "%d"}\n\n' % (i, i) for i in range(4)]
    jsonl.write_bytes(b"".join(records[:3]))  # blank lines between records are not counted
    assert len(tasks.load_bbh(jsonl)) == 3
    jsonl.write_bytes(b"".join(records) + unreadable)
    with pytest.raises(ConfigError, match=r"more than 3 records.*MAX_DATA_RECORDS"):
        tasks.load_bbh(jsonl)
    table = tmp_path / "bbh.csv"
    table.write_bytes(b"input,target\nq0,0\nq1,1\nq2,2\n")
    assert len(tasks.load_bbh(table)) == 3
    table.write_bytes(b"input,target\nq0,0\nq1,1\nq2,2\nq3,3\n" + unreadable)
    with pytest.raises(ConfigError, match="more than 3 records"):
        tasks.load_bbh(table)
    bare = tmp_path / "mmlu.csv"  # MMLU's header-less layout is read a second time, raw
    bare.write_bytes(b"".join(b"%d+1?,1,2,3,4,B\n" % i for i in range(4)))
    with pytest.raises(ConfigError, match="more than 3 records"):
        tasks.load_mmlu(bare)
    whole = tmp_path / "bbh.json"
    whole.write_text(json.dumps({"examples": [{"input": "q", "target": "1"}] * 4}))
    with pytest.raises(ConfigError, match="more than 3 records"):
        tasks.load_bbh(whole)


def test_loaders_read_bom_crlf_and_multiline_cells_as_before(tmp_path: Path) -> None:
    """Streaming changed no result: a BOM is dropped, CRLF ends lines, quoted CSV cells keep
    their line breaks, blank JSONL lines are skipped, and errors name the right line."""
    jsonl = tmp_path / "bbh.jsonl"
    jsonl.write_bytes(
        b'\xef\xbb\xbf{"input": "q1", "target": "1"}\r\n\r\n{"input": "q\\n2", "target": "2"}'
    )
    assert tasks.load_bbh(jsonl) == [tasks.QA("q1", "1"), tasks.QA("q\n2", "2")]
    table = tmp_path / "bbh.csv"
    table.write_bytes(b'\xef\xbb\xbfinput,target\r\n"two\r\nlines",2\r\n\r\nq3,3\r\n')
    assert tasks.load_bbh(table) == [tasks.QA("two\nlines", "2"), tasks.QA("q3", "3")]
    jsonl.write_text('{"input": "q1", "target": "1"}\n\n{"input": oops}\n')
    with pytest.raises(ConfigError, match="line 3 is not JSON"):
        tasks.load_bbh(jsonl)
    jsonl.write_bytes(b'{"input": "q1", "target": "1"}\n\xff\n')
    with pytest.raises(ConfigError, match="cannot read data file"):
        tasks.load_bbh(jsonl)


def test_hub_loader_maps_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """--data hf reads rows through `datasets` (a stand-in here) with the task's columns."""
    import types

    calls: list[tuple[str, str | None, str]] = []

    def load_dataset(name: str, config: str | None, split: str) -> list[dict[str, object]]:
        calls.append((name, config, split))
        return [{"question": "2+2?", "choices": ["3", "4"], "answer": 1}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    task = tasks.get_task("mmlu", data="hf:cais/mmlu:college_physics")
    assert isinstance(task, tasks.SolutionTask)
    assert calls == [("cais/mmlu", "college_physics", "test")]
    assert task.questions[0].answer == "B"


def test_hub_loader_without_datasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional package, --data hf explains what to install."""
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match="pip install datasets"):
        tasks.get_task("gsm8k", data="hf")


# --- DataLoader -----------------------------------------------------------------------------


def test_dataloader_batches_and_reshuffles_per_pass() -> None:
    """Batches cover the data once per pass; each pass has a new order; seeds reproduce."""
    loader = tasks.DataLoader(list(range(10)), batch_size=4, seed=5)
    first = list(loader)
    second = list(loader)
    assert [len(b) for b in first] == [4, 4, 2] and len(loader) == 3
    assert sorted(x for batch in first for x in batch) == list(range(10))
    assert first != second
    assert first == list(tasks.DataLoader(list(range(10)), batch_size=4, seed=5))


def test_dataloader_state_round_trips_through_json() -> None:
    """A restored loader continues with exactly the batches the original would give."""
    a = tasks.DataLoader(list(range(30)), batch_size=4, seed=1)
    a.start_epoch()
    a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = tasks.DataLoader(list(range(30)), batch_size=4, seed=1)
    b.load_state_dict(state)
    for _ in range(12):
        if (batch := a.next_batch()) is None:
            a.start_epoch()
            b.start_epoch()
            continue
        assert batch == b.next_batch()
    with pytest.raises(ConfigError, match="another data set or batch size"):
        tasks.DataLoader(list(range(30)), batch_size=5).load_state_dict(state)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_dataloader_refuses_bad_batch_sizes(size: object) -> None:
    """Batch sizes must be whole numbers >= 1."""
    with pytest.raises(ConfigError, match="batch_size"):
        tasks.DataLoader([1, 2], batch_size=size)  # type: ignore[arg-type]


# --- evaluation functions -------------------------------------------------------------------

_PARSE_CASES = [
    "Answer: 7",
    "I count 3 + 4 = 7.\nAnswer: 7",
    "It costs $1,250.50 in total",
    "The answer is -5",
    "no digits",
    "",
    "Answer: 12.",
    "x2y and then .5",
    "first 3\nsecond line 9",
    "Answer: 7 apples (not 8)",
    "1e3",
    "3/4",
]


def test_parse_integer_answer_examples() -> None:
    """TextGrad's parse: last token with a digit, cut at '.', digits only, 0 if none."""
    got = [tasks.parse_integer_answer(t) for t in _PARSE_CASES]
    assert got == [7, 7, 1250, 5, 0, 0, 12, 0, 9, 8, 13, 34]
    assert tasks.parse_integer_answer("first 3\nsecond line 9", only_first_line=True) == 3


def _textgrad_parse_integer_answer() -> object:
    """TextGrad 0.1.8's own function, read from its installed source without importing
    textgrad (whose import takes seconds and writes log files)."""
    spec = importlib.util.find_spec("textgrad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("textgrad 0.1.8 is not installed (pip install -e '.[reference]')")
    source_path = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "big_bench_hard.py"
    tree = ast.parse(source_path.read_text())
    (node,) = [n for n in tree.body if getattr(n, "name", None) == "parse_integer_answer"]
    namespace: dict[str, object] = {}
    exec(compile(ast.Module([node], []), str(source_path), "exec"), namespace)
    return namespace["parse_integer_answer"]


def test_parse_integer_answer_agrees_with_textgrad() -> None:
    """On many generated replies, the integer parse equals TextGrad 0.1.8's (the oracle)."""
    oracle = _textgrad_parse_integer_answer()
    assert callable(oracle)
    rng = Random(0)
    pieces = ["Answer:", "7", "12.5", "$1,000", "-3", "x4", ".", "..", "answer", "\n", "9)", "(2"]
    texts = _PARSE_CASES + [" ".join(rng.choices(pieces, k=rng.randint(0, 6))) for _ in range(500)]
    for text in texts:
        for first_line in (False, True):
            ours = tasks.parse_integer_answer(text, only_first_line=first_line)
            assert ours == oracle(text, only_first_line=first_line), text


def test_exact_match_functions() -> None:
    """Integer and word matches compare the final answers."""
    assert tasks.string_based_equality_fn(_var("so...\nAnswer: 11"), _var("11")) == 1
    assert tasks.string_based_equality_fn(_var("Answer: 12"), _var("11")) == 0
    assert tasks.words_equality_fn(_var("ok\nAnswer: apple Fig pear."), _var("apple fig pear")) == 1
    assert tasks.words_equality_fn(_var("Answer: fig apple pear"), _var("apple fig pear")) == 0


def test_choice_parsing_and_majority_vote() -> None:
    """Letters are read after the first 'Answer:'; the vote takes the most common, first on ties."""
    assert tasks.parse_choice("Answer: c") == "C"
    assert tasks.parse_choice("Answer:(D) because") == "D"
    assert tasks.parse_choice("no answer") is None
    assert tasks.choice_score("reasoning\nAnswer: B", "B") == 1
    assert tasks.majority_vote(["Answer: A", "Answer: B", "Answer: B"]) == "Answer: B"
    assert tasks.majority_vote(["Answer: C", "Answer: A"]) == "Answer: C"
    assert tasks.majority_vote(["none", "nothing", "Answer: A"]) == "Answer: None"
    with pytest.raises(ConfigError):
        tasks.majority_vote([])


def test_simulator_answers_the_generated_tasks() -> None:
    """The simulator counts, sorts, picks options and judges by content, as the loops need."""
    system = tg.prompts.NUMERIC_TASK_DESCRIPTION + " Be careful." * 300
    right = 0
    for qa in tasks.object_counting(20, seed=1):
        reply = default_answer(
            {
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": qa.question},
                ]
            },
            Random(qa.question),
        )
        right += tasks.parse_integer_answer(reply) == int(qa.answer)
    assert right >= 17
    sorting_system = tg.prompts.WORD_SORTING_TASK_DESCRIPTION + " Be careful." * 300
    for qa in tasks.word_sorting(5, seed=1):
        reply = default_answer(
            {
                "messages": [
                    {"role": "system", "content": sorting_system},
                    {"role": "user", "content": qa.question},
                ]
            },
            Random(0),
        )
        assert set(tasks.final_answer(reply).split()) == set(qa.answer.split())
    q = tasks.arithmetic_choice(1)[0]
    assert tasks.parse_choice(
        default_answer({"messages": [{"role": "user", "content": q.query}]}, Random(0))
    )


def test_simulator_judges_by_content() -> None:
    """A judge request with labelled ground truth and prediction gets the right verdict."""

    def verdict(truth: str, prediction: str) -> str:
        text = (
            f"{tg.prompts.judge_instruction()}\n**{tg.prompts.JUDGE_ROLES[0]}**: q\n"
            f"**{tg.prompts.JUDGE_ROLES[1]}**: {truth}\n"
            f"**{tg.prompts.JUDGE_ROLES[2]}**: {prediction}"
        )
        reply = default_answer({"messages": [{"role": "user", "content": text}]}, Random(0))
        return reply.rsplit("<ACCURACY>", 1)[1].split("</ACCURACY>")[0].strip()

    assert verdict("12", "3 + 9 makes twelve.\nAnswer: 12") == "1"
    assert verdict("12", "Answer: 13") == "0"
    assert verdict("apple fig", "sorted\nAnswer: apple fig") == "1"
    assert verdict("apple fig", "Answer: fig apple") == "0"


def test_simulator_writes_code_and_keeps_it_runnable() -> None:
    """A code request gets a code block with the problem's signature; an optimizer step on code
    adds its tip as a comment, so the program still compiles."""
    problem = tasks.python_basics()[0]
    system = tg.prompts.CODE_FIRST_SYSTEM_PROMPT
    messages = [{"role": "system", "content": system}, {"role": "user", "content": problem.prompt}]
    reply = default_answer({"messages": messages}, Random(0))
    code = reply.split("```python\n", 1)[1].split("```", 1)[0]
    assert "def second_largest(nums: List[int]) -> int:" in code
    compile(code, "<sim>", "exec")
    optimizer = f"<VARIABLE> {code} </VARIABLE> Send it in <IMPROVED_VARIABLE> tags."
    improved = default_answer({"messages": [{"role": "user", "content": optimizer}]}, Random(0))
    new_code = improved.split("<IMPROVED_VARIABLE>", 1)[1].split("</IMPROVED_VARIABLE>", 1)[0]
    assert new_code.splitlines()[-1].startswith("# ")
    compile(new_code, "<sim>", "exec")
