"""The shipped JSON Schema of a run record is the one the typed model generates, and every committed record
under reports/ validates against it with a validator outside the project (jsonschema) and with the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tvr_bench.bench.record_model import SCHEMA_FILE, json_schema_text, record_problems

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p for p in (ROOT / "reports").rglob("*__*__seed*.json"))


def test_shipped_schema_is_generated_from_the_model():
    assert SCHEMA_FILE.read_text() == json_schema_text(), "regenerate it: bench schema --out bench/record.schema.json"


def test_there_are_committed_records():
    assert len(COMMITTED) >= 9


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_record_validates(path):
    jsonschema = pytest.importorskip("jsonschema")
    rec = json.loads(path.read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(rec)
    assert record_problems(rec) == []


def test_external_validator_rejects_what_the_model_rejects():
    jsonschema = pytest.importorskip("jsonschema")
    rec = json.loads(COMMITTED[0].read_text())
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for path, value in ((("seed",), "0"), (("cost", "memory", "kind"), "gpu"), (("cost", "params", "total"), -1)):
        bad = json.loads(json.dumps(rec))
        node = bad
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        assert not validator.is_valid(bad), path
        assert record_problems(bad), path
