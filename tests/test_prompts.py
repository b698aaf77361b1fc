"""Prompt sets: Spec-Bench task selection on a synthetic question.jsonl laid out like the real one."""

import json

import pytest

from specdiff2.data.prompts import FILES, MT_BENCH, PromptSource, load_prompts
from specdiff2.errors import DataError


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / FILES["spec_bench"]
    path.parent.mkdir(parents=True)
    cats = [*MT_BENCH, "translation", "qa"]
    path.write_text("".join(json.dumps({"question_id": i, "category": c, "turns": [f"{c} question {i}"]}) + "\n"
                            for i, c in enumerate(cats)))
    return tmp_path


def test_mt_bench_is_its_eight_categories_and_each_category_works(data_dir):
    def ids(category):
        return [p.id for p in load_prompts(PromptSource(name="spec_bench", data_dir=str(data_dir), category=category))]

    assert ids("mt_bench") == [str(i) for i in range(8)]
    assert ids("coding") == ["4"] and ids("qa") == ["9"]


def test_an_unknown_category_names_the_ones_there(data_dir):
    with pytest.raises(DataError, match=r"no Spec-Bench category 'mtbench'; use mt_bench or one of \[.*'qa'"):
        load_prompts(PromptSource(name="spec_bench", data_dir=str(data_dir), category="mtbench"))


def test_a_directory_as_the_prompt_file_is_named_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"prompt file .* is a directory; pass the \.jsonl file inside it"):
        load_prompts(PromptSource(name="jsonl", path=str(tmp_path)))
