"""Exports stay byte-identical across refactors: the pinned settings of ``export_cases.py``."""

from __future__ import annotations

import json

import pytest
from export_cases import CASES, GOLDEN, export_case


@pytest.mark.parametrize("lazy", [False, True], ids=["loaded", "streamed"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_export_files_are_byte_identical_to_the_pinned_ones(name, lazy, tmp_path):
    expected = json.loads(GOLDEN.read_text())[name]
    assert export_case(name, tmp_path, lazy) == expected
