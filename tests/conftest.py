"""Shared fixtures: reference checkpoints (see ``refmodels.py``), built once per session."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# The rank store keeps summaries in the user cache; tests (and the servers they start) use their own.
if "GRADIEND_CORE_CACHE" not in os.environ:
    os.environ["GRADIEND_CORE_CACHE"] = tempfile.mkdtemp(prefix="gradiend-core-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GRADIEND_CORE_CACHE"], True)

from refmodels import VARIANT_NAMES, Variant, make_variant  # noqa: E402


@pytest.fixture(scope="session")
def ref_variants(tmp_path_factory) -> dict[str, Variant]:
    """All reference checkpoints by name (built once per session; treat them as read-only)."""
    root = tmp_path_factory.mktemp("reference_checkpoints")
    return {name: make_variant(name, root) for name in VARIANT_NAMES}


@pytest.fixture(params=VARIANT_NAMES)
def variant(request, ref_variants) -> Variant:
    return ref_variants[request.param]


@pytest.fixture
def unpruned_ckpt(ref_variants) -> Path:
    return ref_variants["unpruned"].path


@pytest.fixture
def pruned_ckpt(ref_variants) -> Path:
    """Pre- and post-pruned, safetensors, all three map representations."""
    return ref_variants["both"].path


@pytest.fixture
def fresh_copy(tmp_path):
    """Copy a checkpoint directory into this test's tmp dir (for tests that damage files)."""

    def copy(src: Path, name: str = "ckpt") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst

    return copy


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny models: one thread is several times faster than two on a busy machine
    (thread start-up and contention dominate). Restored afterwards for the other test modules."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
