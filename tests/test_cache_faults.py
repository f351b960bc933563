"""The ranking cache cannot serve a wrong number: keys cover what entries depend on, entries are
checked before use, damaged ones are rebuilt, builds in progress survive eviction, an unusable
cache directory is worked around, and damage done while files are in use kills nothing. Every
answer is checked against a brute-force computation from the weights."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gradiend_core.checkpoint import open_checkpoint, read_checkpoint, write_checkpoint
from gradiend_core.checkpoint.format import Architecture
from gradiend_core.errors import CheckpointError
from gradiend_core.pruning.export import export_pruned
from gradiend_core.ranking import store
from gradiend_core.ranking.importance import PARTS, weight_importance
from gradiend_core.ranking.keys import finite_or_zero, sort_keys
from gradiend_core.selection.rule import resolve_k, select, select_bounds
from gradiend_core.space.param_map import ParamMap
from gradiend_core.util import cache as cache_mod

REPO = Path(__file__).resolve().parent.parent


def _state(n: int, latent: int, seed: int, dtype=torch.float32):
    rng = np.random.default_rng(seed)
    enc = rng.standard_normal((latent, n)).astype(np.float32)
    dec = (rng.standard_normal((n, latent)) * rng.standard_exponential((n, 1)) ** 3).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    dec[rng.integers(0, n, n // 50)] = 0.0
    dec[rng.integers(0, n, n // 100)] = dec[0]  # ties
    bias[rng.integers(0, n, 3)] = np.nan
    return {
        "encoder.0.linear.weight": torch.from_numpy(enc).to(dtype),
        "encoder.0.linear.bias": torch.zeros(latent, dtype=dtype),
        "decoder.0.linear.weight": torch.from_numpy(dec).to(dtype),
        "decoder.0.linear.bias": torch.from_numpy(bias).to(dtype),
    }


def _write(path: Path, n: int, latent: int, seed: int, sizes=None, dtype="float32"):
    sizes = sizes or [n // 4, n // 4, n - 2 * (n // 4)]
    pmap = ParamMap.full([(f"layer.{i}.weight", (int(s),)) for i, s in enumerate(sizes)])
    state = _state(n, latent, seed, getattr(torch, dtype))
    write_checkpoint(
        path, architecture=Architecture(n, latent, torch_dtype=dtype), param_map=pmap, state_dict=state, metadata={}
    )
    return path


def _truth(path: Path):
    """Importance of every part, brute force from the loaded weights."""
    state = read_checkpoint(path).state_dict
    return {p: weight_importance(state, p) for p in PARTS}


def _brute_keep(imp: np.ndarray, topk=None, threshold=None) -> np.ndarray:
    alive = np.ones(imp.size, dtype=bool)
    if threshold is not None:
        alive &= ~np.isnan(imp) & (imp >= np.float32(threshold))
    idx = np.flatnonzero(alive)
    order = idx[np.lexsort((idx, ~sort_keys(imp[idx])))]
    k = idx.size if topk is None else resolve_k(topk, idx.size)
    return np.sort(order[:k])


def _check_answers(data, truth, rng, sizes) -> None:
    """A few selections of every part: kept dims, counts, shares, per-parameter counts, bounds."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for part in PARTS:
        ranking = store.ranking_for(data, part, layout="never")
        imp = truth[part]
        topk = [1, int(rng.integers(1, imp.size + 1)), float(rng.uniform(0.001, 1.0))][int(rng.integers(0, 3))]
        threshold = None if rng.random() < 0.6 else float(np.nanquantile(imp, rng.uniform(0, 0.99)))
        keep = _brute_keep(imp, topk, threshold)
        if keep.size == 0:
            continue
        b = select_bounds(ranking, topk=topk, threshold=threshold)
        assert b.k.lo <= keep.size <= b.k.hi
        mass = float(finite_or_zero(imp[keep]).sum())
        km = b.kept_mass()
        assert km.lo - 1e-9 * abs(km.lo) <= mass <= km.hi + 1e-9 * abs(km.hi)
        sel = select(ranking, topk=topk, threshold=threshold)
        np.testing.assert_array_equal(sel.keep, keep)
        assert np.isclose(sel.kept_mass, mass, rtol=1e-9, atol=1e-12)
        per_param = np.diff(np.searchsorted(keep, offsets))
        pc = b.param_counts()
        assert (pc.lo <= per_param).all() and (per_param <= pc.hi).all()
        np.testing.assert_array_equal(sel.dims.param_counts_top(sel.k, with_mass=False)[0], per_param)


def _cache_files(root: Path):
    """The files below ``root`` (a reader in another process may remove a damaged entry meanwhile)."""
    out = []
    for dirpath, _, files in os.walk(root):  # os.walk skips what vanishes while it walks
        out += [Path(dirpath) / f for f in files]
    return sorted(p for p in out if p.is_file())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(root))
    store.clear_memory()
    cache_mod._warned.clear()
    yield root
    store.wait_for_layouts(120)
    store.clear_memory()


def test_rewritten_bytes_with_the_mtime_set_back_get_new_entries_and_new_numbers(tmp_path, cache):
    path = _write(tmp_path / "ck", 200_000, 1, seed=1)  # 2.4 MB: the rewrite lands after the first MiB
    weights = path / "model.safetensors"
    old = open_checkpoint(path)
    before = select(store.ranking_for(old, "decoder-weight", layout="now"), topk=10).keep
    st = os.stat(weights)
    with open(weights, "r+b") as f:  # same size, bytes after the first MiB (decoder rows) rewritten in place
        f.seek(int(1.25 * (1 << 20)))
        f.write(np.full(4096, 1e9, dtype=np.float32).tobytes())
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # as cp -p, rsync -t or an archive would
    assert os.stat(weights).st_mtime_ns == st.st_mtime_ns and os.stat(weights).st_size == st.st_size
    with pytest.raises(CheckpointError, match="changed while it was open"):
        store.ranking_for(old, "decoder-weight")  # the open checkpoint is never answered from the old bytes
    new = open_checkpoint(path)
    assert new.weights.identity() != old.weights.identity()
    truth = _truth(path)
    after = select(store.ranking_for(new, "decoder-weight", layout="now"), topk=10).keep
    np.testing.assert_array_equal(after, _brute_keep(truth["decoder-weight"], 10))
    assert not np.array_equal(after, before)
    result = export_pruned(new, tmp_path / "out", part="decoder-weight", topk=10)
    out = read_checkpoint(result.path)
    src = read_checkpoint(path).state_dict["decoder.0.linear.weight"]
    torch.testing.assert_close(out.state_dict["decoder.0.linear.weight"], src[torch.from_numpy(after)])


def test_the_scan_is_keyed_by_the_param_map(tmp_path, cache):
    n = 4000
    path = _write(tmp_path / "ck", n, 1, seed=2, sizes=[1000, 3000])
    first = store.open_rankings(open_checkpoint(path))
    np.testing.assert_array_equal(first["decoder-weight"].params.offsets, [0, 1000, 3000 + 1000])
    cfg = json.loads((path / "config.json").read_text())
    entries = cfg["mapping"]["param_map"]
    entries[0]["shape"], entries[0]["num_selected"] = [2500], 2500
    entries[1]["shape"], entries[1]["num_selected"] = [1500], 1500
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    store.clear_memory()
    data = open_checkpoint(path)
    second = store.open_rankings(data)["decoder-weight"]
    np.testing.assert_array_equal(second.params.offsets, [0, 2500, 4000])
    imp = _truth(path)["decoder-weight"]
    keep = _brute_keep(imp, 3900)
    sel = select(second, topk=3900)
    np.testing.assert_array_equal(
        sel.dims.param_counts_top(3900, with_mass=False)[0], np.diff(np.searchsorted(keep, [0, 2500, 4000]))
    )
    assert len(list((cache / "rankings").glob("*/scan-*"))) == 2


DAMAGE = {
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),
    "corrupted": lambda f: f.write_bytes(bytes(b ^ 0x5A if i % 97 == 3 else b for i, b in enumerate(f.read_bytes()))),
    "removed": lambda f: f.unlink(),
    "emptied": lambda f: f.write_bytes(b""),
}


@pytest.mark.parametrize(
    "name",
    [
        "scan-/scan.npz",
        "scan-/meta.json",
        ".layout/meta.json",
        ".layout/order.npy",
        ".layout/values.npy",
        ".layout/segments.npz",
    ],
)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_entry_is_discarded_and_rebuilt_with_one_warning(tmp_path, cache, caplog, name, damage):
    path = _write(tmp_path / "ck", 3000, 1, seed=3)
    truth = _truth(path)
    store.ranking_for(open_checkpoint(path), "decoder-weight", layout="now")
    store.clear_memory()
    entry, file = name.split("/")
    (target,) = [f for f in _cache_files(cache / "rankings") if f.name == file and entry in f.parent.name]
    DAMAGE[damage](target)
    with caplog.at_level(logging.WARNING, logger="gradiend_core.cache"):
        data = open_checkpoint(path)
        ranking = store.ranking_for(data, "decoder-weight", layout="now")
        _check_answers(data, truth, np.random.default_rng(0), [750, 750, 1500])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "discarded a damaged cache entry" in said[0] and "\n" not in said[0], said
    assert ranking.has_layout  # rebuilt


def test_hand_edited_counts_are_refused(tmp_path, cache, caplog):
    """Counts edited with the checksum left alone, or edited together with a new checksum."""
    import hashlib
    import io

    path = _write(tmp_path / "ck", 3000, 1, seed=4)
    truth = _truth(path)
    store.open_rankings(open_checkpoint(path))
    (npz,) = (cache / "rankings").glob("*/scan-*/scan.npz")
    for rewrite_checksum in (False, True):
        store.clear_memory()
        with np.load(npz) as z:
            arrays = {k: z[k].copy() for k in z.files}
        counts = arrays["decoder-weight/counts"]
        top = int(np.flatnonzero(counts)[-1])
        counts[top] += 5  # five more dims "in the top bucket"
        counts[np.flatnonzero(counts)[0]] -= 5
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        npz.write_bytes(buf.getvalue())
        if rewrite_checksum:
            meta_path = npz.parent / "meta.json"
            meta = json.loads(meta_path.read_text())
            meta["checksum"] = hashlib.sha256(buf.getvalue()).hexdigest()
            meta_path.write_text(json.dumps(meta))
        cache_mod._warned.clear()
        with caplog.at_level(logging.WARNING, logger="gradiend_core.cache"):
            data = open_checkpoint(path)
            _check_answers(data, truth, np.random.default_rng(1), [750, 750, 1500])
        assert any("damaged" in r.getMessage() for r in caplog.records)
        (npz,) = (cache / "rankings").glob("*/scan-*/scan.npz")  # the rebuilt entry


def test_eviction_spares_builds_in_progress_and_removes_those_of_dead_builders(tmp_path):
    root = tmp_path / "rankings"
    (root / "idA").mkdir(parents=True)
    live = cache_mod.building_dir(root / "idA")  # this process: alive
    (live / "order.npy").write_bytes(b"x" * 5000)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = live.name.split("-")[1]
    dead = root / "idA" / f"{cache_mod.BUILDING_PREFIX}{host}-{child.pid}-abc"
    dead.mkdir()
    (dead / "order.npy").write_bytes(b"x" * 5000)
    old = root / "idA" / "decoder-weight.layout"
    old.mkdir()
    (old / "order.npy").write_bytes(b"x" * 5000)
    removed = cache_mod.evict(root, budget=0)
    assert removed == [old] and live.exists() and not dead.exists()


def test_an_unusable_cache_directory_is_worked_around_and_said_once(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(blocker / "cache"))
    store.clear_memory()
    cache_mod._warned.clear()
    path = _write(tmp_path / "ck", 3000, 1, seed=5)
    truth = _truth(path)
    from gradiend_core.cli import main

    with caplog.at_level(logging.WARNING, logger="gradiend_core.cache"):
        data = open_checkpoint(path)
        store.ranking_for(data, "decoder-weight", layout="now")
        _check_answers(data, truth, np.random.default_rng(2), [750, 750, 1500])
        assert main(["prune", str(path), "--topk", "0.05", "--dry-run"]) == 0
        assert main(["prune", str(path), "--topk", "0.05", "--out", str(tmp_path / "out")]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "not usable" in said[0], said
    store.clear_memory()


def test_a_full_cache_directory_is_worked_around(tmp_path, cache, monkeypatch, caplog):
    import errno

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    path = _write(tmp_path / "ck", 3000, 1, seed=6)
    monkeypatch.undo()
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(cache))
    truth = _truth(path)
    monkeypatch.setattr(Path, "write_bytes", full)
    with caplog.at_level(logging.WARNING, logger="gradiend_core.cache"):
        data = open_checkpoint(path)
        store.ranking_for(data, "decoder-weight", layout="now")
        _check_answers(data, truth, np.random.default_rng(3), [750, 750, 1500])
    assert any("No space left" in r.getMessage() for r in caplog.records)
    assert not list(cache.rglob(".building-*"))


# ---------------------------------------------------------------------------- fault injection
class Killed(BaseException):
    """Stands for SIGKILL inside this process: nothing after the raise point runs."""


def _faults(rng, cache: Path) -> str:
    files = _cache_files(cache / "rankings") if (cache / "rankings").exists() else []
    kind = ["none", "truncate", "corrupt", "remove", "stale-build", "kill"][int(rng.integers(0, 6))]
    if kind in ("truncate", "corrupt", "remove") and files:
        f = files[int(rng.integers(0, len(files)))]
        raw = f.read_bytes()
        if kind == "truncate":
            f.write_bytes(raw[: int(rng.integers(0, max(1, len(raw))))])
        elif kind == "corrupt" and raw:
            at = rng.integers(0, len(raw), size=int(rng.integers(1, 8)))
            arr = bytearray(raw)
            for a in at:
                arr[a] ^= int(rng.integers(1, 256))
            f.write_bytes(bytes(arr))
        elif kind == "remove":
            f.unlink()
    elif kind == "stale-build" and (cache / "rankings").exists():
        for d in (cache / "rankings").iterdir():
            host = socket.gethostname().replace("-", "_")
            leftover = d / f"{cache_mod.BUILDING_PREFIX}{host}-999999999-stale"  # a builder that died
            leftover.mkdir(exist_ok=True)
            (leftover / "scan.npz").write_bytes(b"half")
    return kind


def test_fault_injection_kills_truncates_and_corrupts_the_cache_with_zero_wrong_numbers(tmp_path, monkeypatch):
    """200 seeded trials: damage the cache at random points before and during opens, layouts and
    exports (a build killed mid-way, files truncated, corrupted or removed, stale builds); every
    answer is compared with brute force from the weights."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(cache))
    cks = [
        (_write(tmp_path / "a", 3000, 1, seed=10), [750, 750, 1500]),
        (_write(tmp_path / "b", 2048, 2, seed=11, sizes=[1000, 1048], dtype="bfloat16"), [1000, 1048]),
    ]
    truths = {p: _truth(p) for p, _ in cks}
    import gradiend_core.ranking.store.disk as disk_mod
    import gradiend_core.ranking.store.scan as scan_mod

    real_scan, real_layout = scan_mod.scan_weights, disk_mod._layout_pass
    kinds = {}
    for trial in range(200):
        rng = np.random.default_rng(trial)
        path, sizes = cks[trial % 2]
        if rng.random() < 0.5:
            store.clear_memory()  # a new process; else the server goes on with what it holds
        kind = _faults(rng, cache)
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "kill":
            store.clear_memory()
            which = "scan" if rng.random() < 0.5 else "layout"
            countdown = [int(rng.integers(0, 3))]

            def dying(*a, _real=real_scan if which == "scan" else real_layout, countdown=countdown, **k):
                if countdown[0] <= 0:
                    raise Killed()
                countdown[0] -= 1
                return _real(*a, **k)

            monkeypatch.setattr(disk_mod, "scan_weights" if which == "scan" else "_layout_pass", dying)
            try:
                for part in PARTS:
                    store.ranking_for(open_checkpoint(path), part, layout="now")
            except Killed:
                pass
            monkeypatch.setattr(disk_mod, "scan_weights", real_scan)
            monkeypatch.setattr(disk_mod, "_layout_pass", real_layout)
            for leftover in cache.rglob(f".building-*-{os.getpid()}-*"):  # what a killed process leaves
                host = leftover.name[len(".building-") :].split("-")[0]
                leftover.rename(leftover.with_name(f".building-{host}-999999999-{leftover.name[-8:]}"))
        data = open_checkpoint(path)
        layout = ["now", "never"][int(rng.integers(0, 2))]
        store.ranking_for(data, PARTS[int(rng.integers(0, 4))], layout=layout)
        if rng.random() < 0.3:  # damage while the rankings are in use
            _faults(rng, cache)
        _check_answers(data, truths[path], rng, sizes)
        if trial % 5 == 0:
            topk = float(rng.uniform(0.01, 0.5))
            part = PARTS[int(rng.integers(0, 4))]
            result = export_pruned(data, tmp_path / f"out{trial}", part=part, topk=topk, source_sha256="0" * 64)
            keep = _brute_keep(truths[path][part], topk)
            out = read_checkpoint(result.path).state_dict["decoder.0.linear.weight"]
            src = read_checkpoint(path).state_dict["decoder.0.linear.weight"]
            torch.testing.assert_close(out, src[torch.from_numpy(keep)], rtol=0, atol=0)
            shutil.rmtree(result.path)
    cache_mod.evict(cache / "rankings")
    assert not [p for p in cache.rglob(".building-*") if "999999999" in p.name]
    assert set(kinds) >= {"none", "truncate", "corrupt", "remove", "stale-build", "kill"}
    store.clear_memory()


SERVER = r"""
import sys, numpy as np
from gradiend_core.checkpoint import open_checkpoint
from gradiend_core.ranking import store
from gradiend_core.selection.rule import select
path, rounds = sys.argv[1], int(sys.argv[2])
data = open_checkpoint(path)
r = store.ranking_for(data, "decoder-weight", layout="now")
expect = np.load(sys.argv[3])
print("ready", flush=True)
for i in range(rounds):
    for k in (1, 17, 300, 1500):
        got = select(r, topk=k).keep
        assert np.array_equal(got, expect[str(k)]), (i, k)
    r.dims().forget_answers()
    with r._lock:
        r._sorted.clear()
        r._sorted_dims = 0
print("alive", flush=True)
"""


def test_a_server_survives_its_layout_files_being_truncated_and_rewritten_by_another_process(tmp_path, monkeypatch):
    """The layout is read with positional reads: another process truncating or rewriting it
    leaves the reader with a short read or a checksum mismatch, never a SIGBUS."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADIEND_CORE_CACHE", str(cache))
    path = _write(tmp_path / "ck", 3000, 1, seed=12)
    imp = _truth(path)["decoder-weight"]
    np.savez(tmp_path / "expect.npz", **{str(k): _brute_keep(imp, k) for k in (1, 17, 300, 1500)})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path), "400", str(tmp_path / "expect.npz")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "ready"
    rng = np.random.default_rng(0)
    for _ in range(30):  # while it answers: truncate, rewrite and remove its layout files
        files = [f for f in _cache_files(cache / "rankings") if f.suffix == ".npy"]
        if not files or proc.poll() is not None:
            break
        f = files[int(rng.integers(0, len(files)))]
        try:
            with open(f, "r+b") as h:
                h.truncate(int(rng.integers(0, os.fstat(h.fileno()).st_size + 1)))
        except FileNotFoundError:  # the server found the damage and removed the entry meanwhile
            continue
    out, err = proc.communicate(timeout=600)
    assert "discarded a damaged cache entry" in err  # it did read the damaged files, and carried on
    assert proc.returncode == 0 and out.strip() == "alive", (
        proc.returncode,
        signal.Signals(-proc.returncode).name if proc.returncode < 0 else "",
        err[-2000:],
    )
