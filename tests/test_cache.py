"""The image cache: round trip, sorted gather, resume after interruption, verification, staleness."""

import json
import pickle

import numpy as np
import pytest

from fairscan.data.cache import ImageCache, _verify, build_cache, cache_files
from fairscan.data.images import load_resized, resolve_image_path
from fairscan.data.synthetic import prepare_synthetic_manifest
from fairscan.errors import InputError, RunError
from fairscan.schema import read_manifest


@pytest.fixture
def manifest_dir(tmp_path_factory):
    return prepare_synthetic_manifest(tmp_path_factory.mktemp("cache") / "d", patients=40, seed=6).parent


def test_round_trip(manifest_dir):
    meta = build_cache(manifest_dir, size=32, chunk=16)
    assert meta["complete"] and meta["verified"]["mismatches"] == 0
    cache = ImageCache.find(manifest_dir)
    m = read_manifest(manifest_dir)
    assert len(cache) == len(m) and cache.size == 32
    for i, (image_id, path) in enumerate(zip(m["image_id"], m["path"], strict=True)):
        assert cache.index_of(image_id) == i
        assert np.array_equal(cache.get(i), load_resized(resolve_image_path(manifest_dir, path), 32))
    rows = [5, 0, 3, 3]
    assert np.array_equal(cache.get_many(rows), np.stack([cache.get(i) for i in rows]))
    clone = pickle.loads(pickle.dumps(cache))  # DataLoader workers: the array is reopened, not copied
    assert clone._array is None and np.array_equal(clone.get(2), cache.get(2))
    with pytest.raises(KeyError, match="not in the cache"):
        cache.index_of("nope")
    assert build_cache(manifest_dir, size=32)["up_to_date"]


def test_resume_after_interruption(manifest_dir):
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if done >= 32:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(manifest_dir, size=32, chunk=16, progress=interrupt, workers=1)
    assert ImageCache.find(manifest_dir) is None  # incomplete: the loader falls back to files
    with pytest.raises(InputError, match="no complete image cache"):
        ImageCache.open(manifest_dir)
    meta = build_cache(manifest_dir, size=32, chunk=16)
    assert meta["resumed_rows"] == 32 and meta["complete"]
    assert not cache_files(manifest_dir, 32)["done"].exists()
    cache = ImageCache.open(manifest_dir / "cache")
    m = read_manifest(manifest_dir)
    assert all(
        np.array_equal(cache.get(i), load_resized(resolve_image_path(manifest_dir, p), 32))
        for i, p in enumerate(m["path"])
    )


def test_unreadable_image_is_reported_and_the_rest_kept(manifest_dir):
    m = read_manifest(manifest_dir)
    victim = resolve_image_path(manifest_dir, m["path"].iloc[3])
    good = victim.read_bytes()
    victim.write_bytes(b"broken")
    with pytest.raises(InputError, match="could not be decoded") as err:
        build_cache(manifest_dir, size=32)
    assert str(victim) in err.value.message and "--check-images" in err.value.hint
    victim.write_bytes(good)
    assert build_cache(manifest_dir, size=32)["resumed_rows"] == len(m) - 1


def test_verification_catches_a_corrupt_row(manifest_dir):
    build_cache(manifest_dir, size=32)
    files = cache_files(manifest_dir, 32)
    m = read_manifest(manifest_dir)
    array = np.memmap(files["array"], dtype=np.uint8, mode="r+", shape=(len(m), 32, 32))
    array[:] = 0
    array.flush()
    paths = [str(resolve_image_path(manifest_dir, p)) for p in m["path"]]
    with pytest.raises(RunError, match="differ from their images"):
        _verify(files["array"], len(m), 32, paths, sample=8, seed=0)


def test_stale_cache_is_not_found(manifest_dir):
    build_cache(manifest_dir, size=32)
    meta_path = cache_files(manifest_dir, 32)["meta"]
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "manifest_sha256": "0" * 64}))
    assert ImageCache.find(manifest_dir) is None
    assert ImageCache.open(manifest_dir, 32).size == 32  # explicit opening still works


def test_cache_cli(manifest_dir, run_cli):
    code, out, err = run_cli("prepare", "cache", manifest_dir, "--size", "24")
    assert code == 0, err
    assert "re-decoded rows, 0 mismatches" in out.replace("\n", " ")
    code, _, err = run_cli("prepare", "cache", manifest_dir, "--size", "4")
    assert code == 2 and "out of range" in err
