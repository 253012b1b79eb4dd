"""Batches on a Dask cluster: a LocalCluster of worker processes over local folders (through fsspec),
and memory:// on an in-process cluster."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("distributed")

import aecodec  # noqa: E402
from aecodec import cluster, collection  # noqa: E402
from aecodec.cli import main  # noqa: E402
from tests.conftest import synthetic_image  # noqa: E402

GOOD = 10


@pytest.fixture(scope="module")
def client():
    c = cluster.local(2)
    yield c
    c.close()
    c.cluster.close()


def collection_folder(root: Path, good: int = GOOD) -> dict[str, np.ndarray]:
    """Images in nested folders, a truncated PNG and a text file: {relative path: pixels} of the images."""
    images = {}
    for i in range(good):
        rel = f"{'ab'[i % 2]}/{i // 4}/img{i}.png"
        pixels = synthetic_image(48 + 16 * (i % 3), 64, seed=i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / rel)
        images[rel] = pixels
    (root / "a" / "corrupt.png").write_bytes((root / "a/0/img0.png").read_bytes()[:80])
    (root / "notes.txt").write_text("not an image\n")
    (root / ".hidden.png").write_bytes(b"skipped: hidden")
    return images


def leftovers(dest: Path) -> list[Path]:
    return [p for p in dest.rglob("*") if p.is_file() and ("parts" in p.parts or p.name.endswith(".part"))]


def failed_names(summary: dict) -> list[str]:
    return sorted(Path(f["src"]).name for f in summary["failed"])


def test_a_folder_comes_out_complete_with_its_failures(client, tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    images = collection_folder(src)
    summary = cluster.compress(client, [str(src)], str(dest), quality=3)
    assert summary["files"] == GOOD and summary["skipped"] == 0 and summary["workers"] == 2
    assert failed_names(summary) == ["corrupt.png", "notes.txt"]
    reasons = {Path(f["src"]).name: f["error"] for f in summary["failed"]}
    assert "is not an image that Pillow can read" in reasons["notes.txt"]
    for rel, pixels in images.items():
        data = (dest / rel).with_suffix(".aec").read_bytes()
        assert data == aecodec.compress(pixels, quality=3)  # the same file as one machine makes
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.aec")) == sorted(
        str(Path(r).with_suffix(".aec")) for r in images)
    assert not leftovers(dest)
    assert summary["bytes_out"] == sum(p.stat().st_size for p in dest.rglob("*.aec"))

    # a rerun of the finished job does no work; one input changed: that file only is redone
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("*.aec")}
    again = cluster.compress(client, [str(src)], str(dest), quality=3)
    assert again["files"] == 0 and again["skipped"] == GOOD and failed_names(again) == failed_names(summary)
    assert stamps == {p: p.stat().st_mtime_ns for p in dest.rglob("*.aec")}
    changed = synthetic_image(64, 64, seed=99)
    Image.fromarray(changed).save(src / "b/0/img1.png")
    third = cluster.compress(client, [str(src)], str(dest), quality=3)
    assert third["files"] == 1 and third["skipped"] == GOOD - 1
    assert np.asarray(aecodec.decompress((dest / "b/0/img1.aec").read_bytes())).shape == changed.shape
    # other options: every file again
    assert cluster.compress(client, [str(src)], str(dest), quality=5)["files"] == GOOD


def test_an_output_no_job_made_is_not_replaced_without_force(client, tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    Image.fromarray(synthetic_image(32, 48)).save((src.mkdir(), src / "x.png")[1])
    (dest).mkdir()
    (dest / "x.aec").write_bytes(b"mine")
    summary = cluster.compress(client, [str(src)], str(dest))
    assert "exists and no aecodec job made it" in summary["failed"][0]["error"]
    assert (dest / "x.aec").read_bytes() == b"mine"
    assert cluster.compress(client, [str(src)], str(dest), force=True)["files"] == 1
    assert aecodec.decompress((dest / "x.aec").read_bytes()).size == (48, 32)


def test_a_worker_killed_half_way(client, tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    images = collection_folder(src, good=24)
    # what a worker lost mid-write in an earlier run left behind
    (dest / collection.JOB_DIR / "parts").mkdir(parents=True)
    (dest / collection.JOB_DIR / "parts" / "0123abcd").write_bytes(b"half a file")
    killed = []

    def kill_one(counts: dict) -> None:
        if counts["done"] >= 6 and not killed:
            busy = [w for w, tasks in client.processing().items() if tasks]
            pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = cluster.compress(client, [str(src)], str(dest), progress=kill_one, files_per_task=2)
    assert killed
    assert summary["files"] == 24 and summary["skipped"] == 0  # the retried task's finished files count as coded
    assert failed_names(summary) == ["corrupt.png", "notes.txt"]
    outputs = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.aec"))
    assert outputs == sorted(str(Path(r).with_suffix(".aec")) for r in images)  # each once
    for rel, pixels in images.items():
        assert np.asarray(aecodec.decompress((dest / rel).with_suffix(".aec").read_bytes())).shape == pixels.shape
    assert not leftovers(dest)
    client.wait_for_workers(2)


def test_decompress_a_folder_of_aec_files(client, tmp_path):
    src, dest = tmp_path / "aec", tmp_path / "png"
    (src / "deep").mkdir(parents=True)
    pixels = synthetic_image(40, 56, seed=3)
    data = aecodec.compress(pixels, quality=6)
    (src / "deep" / "one.aec").write_bytes(data)
    (src / "bad.aec").write_bytes(data[:-5])
    summary = cluster.decompress(client, [str(src / "**" / "*.aec")], str(dest))
    assert summary["files"] == 1 and "bad.aec" in summary["failed"][0]["error"]
    assert np.array_equal(np.asarray(Image.open(dest / "deep" / "one.png")), np.asarray(aecodec.decompress(data)))


def test_workers_that_cannot_see_the_inputs_are_refused(client):
    with pytest.raises(cluster.ClusterError, match="cannot see memory:///elsewhere"):
        cluster.compress(client, ["memory://elsewhere"], "memory://out")  # each worker process has its own memory


def test_memory_filesystem_in_process():
    import fsspec
    from distributed import Client, LocalCluster

    fs = fsspec.filesystem("memory")
    images = {f"in/{i}.png": synthetic_image(32, 48, seed=i) for i in range(3)}
    for name, pixels in images.items():
        with fs.open(name, "wb") as f:
            Image.fromarray(pixels).save(f, format="PNG")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, Client(lc) as c:
        summary = cluster.compress(c, ["memory://in"], "memory://out", quality=2)
        assert summary["files"] == 3 and not summary["failed"]
        back = cluster.decompress(c, ["memory://out"], "memory://back")
        assert back["files"] == 3
        for name, pixels in images.items():
            stem = name.split("/")[1].split(".")[0]
            data = fs.cat_file(f"out/{stem}.aec")
            assert data == aecodec.compress(pixels, quality=2)
            with fs.open(f"back/{stem}.png") as f:
                assert np.array_equal(np.asarray(Image.open(f)), np.asarray(aecodec.decompress(data)))
        assert not fs.exists("out/.aecodec-job/parts")
    fs.rm(["/in", "/out", "/back"], recursive=True)


def test_workers_that_do_not_match_are_refused(monkeypatch):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as lc, Client(lc) as c:
        with pytest.raises(cluster.ClusterError, match="runs 2 threads"):
            cluster.compress(c, ["memory://x"], "memory://y")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, Client(lc) as c:
        # an in-process worker: what the submitting side expects is changed, not what the worker has
        real = cluster._identity()
        monkeypatch.setattr(cluster, "_job_identity", lambda: {**real, "version": "9.9.9"})
        with pytest.raises(cluster.ClusterError, match=r"worker .* has version .*, this machine 9\.9\.9"):
            cluster.compress(c, ["memory://x"], "memory://y")
        # a worker that joined after the check: its tasks fail, naming it, and code nothing
        monkeypatch.setattr(cluster, "_check_workers", lambda *args: {"workers": 1, "runtime_threads": 1})
        fs = __import__("fsspec").filesystem("memory")
        fs.pipe_file("/late/x.png", b"never read")
        summary = cluster.compress(c, ["memory://late"], "memory://late-out")
        assert summary["files"] == 0 and "has aecodec" in summary["failed"][0]["error"]
        assert not fs.exists("/late-out/x.aec")
        fs.rm(["/late", "/late-out"], recursive=True)
        monkeypatch.undo()
        monkeypatch.setattr(cluster, "_NEEDS", {"effort": ("no_such_module",)})
        with pytest.raises(cluster.ClusterError, match="lacks no_such_module, which effort needs"):
            cluster.compress(c, ["memory://x"], "memory://y", effort=1)


def test_a_list_file_and_a_glob(tmp_path):
    (tmp_path / "p" / "q").mkdir(parents=True)
    for name in ("p/a.png", "p/q/b.png", "p/q/c.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "p" / "list.txt").write_text("a.png\n\nq/b.png\n" + str(tmp_path / "p/q/c.jpg") + "\n")
    listed = list(collection.inputs(str(tmp_path / "p" / "list.txt")))
    assert [i.relative for i in listed] == ["a.png", "q/b.png", "q/c.jpg"]
    assert [i.relative for i in collection.inputs(str(tmp_path / "p" / "**" / "*.png"))] == ["a.png", "q/b.png"]
    assert collection.with_suffix("q/b.tar.png", ".aec") == "q/b.tar.aec"
    assert collection.with_suffix("q.d/noext", ".aec") == "q.d/noext.aec"
    with pytest.raises(FileNotFoundError):
        list(collection.inputs(str(tmp_path / "nothing")))


def test_the_command_line(client, tmp_path):
    from click.testing import CliRunner

    src, dest = tmp_path / "in", tmp_path / "out"
    collection_folder(src, good=3)
    r = CliRunner().invoke(main, ["compress", str(src), "-o", str(dest), "--cluster", "local:2", "--json", "-q", "2"])
    assert r.exit_code == 1  # two inputs failed
    summary = json.loads(r.stdout)
    assert summary["files"] == 3 and len(summary["failed"]) == 2
    assert "error:" in r.stderr and "notes.txt" in r.stderr
    # a rate target: met, missed (written, with a warning), and missed under --strict (an error, nothing written)
    one = str(src / "a" / "0" / "img0.png")
    r = CliRunner().invoke(main, ["compress", one, "-o", str(tmp_path / "t1"), "--cluster", "local:1", "--size", "400"])
    assert r.exit_code == 0 and "warning" not in r.stderr
    assert 300 < (tmp_path / "t1" / "img0.aec").stat().st_size <= 400
    r = CliRunner().invoke(main, ["compress", one, "-o", str(tmp_path / "t2"), "--cluster", "local:1", "--bpp", "0.001"])
    assert r.exit_code == 0 and "warning:" in r.stderr and "0.001 bpp" in r.stderr
    r = CliRunner().invoke(main, ["compress", one, "-o", str(tmp_path / "t3"), "--cluster", "local:1", "--bpp", "0.001",
                                  "--strict"])
    assert r.exit_code == 1 and "--strict" in r.stderr and not (tmp_path / "t3" / "img0.aec").exists()
    r = CliRunner().invoke(main, ["decompress", str(dest), "-o", str(tmp_path / "back"), "--cluster", "local:1"])
    assert r.exit_code == 0 and "3 files coded" in r.stdout
    for args, message in [(["--cluster", "local:2"], "needs -o"), (["-o", "x", "-j", "2", "--cluster", "local:2"], "not both"),
                          (["-o", "x", "--cluster", "local:0"], "local:N with N from 1")]:
        r = CliRunner().invoke(main, ["compress", str(src), *args])
        assert r.exit_code == 2 and message in r.output


@pytest.mark.slow
def test_a_file_that_kills_its_worker_fails_alone(tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    collection_folder(src, good=4)
    Image.new("RGB", (8000, 6000), (90, 120, 150)).save(src / "huge.png")  # 150 kB on disk, GBs to code
    c = cluster.local(2, memory_limit="700MB")
    try:
        summary = cluster.compress(c, [str(src)], str(dest))
    finally:
        c.close()
        c.cluster.close()
    assert summary["files"] == 4
    errors = {Path(f["src"]).name: f["error"] for f in summary["failed"]}
    assert sorted(errors) == ["corrupt.png", "huge.png", "notes.txt"]
    assert f"died on each of {cluster.MAX_RETRIES + 1} attempts" in errors["huge.png"]
    assert not leftovers(dest)


def test_encoder_effort_on_the_workers(client, tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    pixels = synthetic_image(64, 64, seed=5)
    Image.fromarray(pixels).save(src / "x.png")
    summary = cluster.compress(client, [str(src)], str(dest), quality=3, effort=1)
    assert summary["files"] == 1 and not summary["failed"]
    data = (dest / "x.aec").read_bytes()
    assert data != aecodec.compress(pixels, quality=3)  # refined latents, not g_a's
    assert np.asarray(aecodec.decompress(data)).shape == pixels.shape


def test_two_inputs_with_one_output_and_a_glob_at_the_root():
    import fsspec
    from distributed import Client, LocalCluster

    fs = fsspec.filesystem("memory")
    for name, seed in (("a.png", 1), ("a.jpg", 2), ("b.png", 3)):
        with fs.open(f"/{name}", "wb") as f:
            Image.fromarray(synthetic_image(32, 32, seed=seed)).save(f, format="PNG" if name.endswith("png") else "JPEG")
    names = collection.Names()
    assert names.add("x/a.aec") and not names.add("x/a.aec") and names.add("x/b.aec")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc, Client(lc) as c:
        summary = cluster.compress(c, ["memory:///*.*"], "memory://fresh/out", files_per_task=1)
        assert summary["files"] == 2  # a.jpg and b.png (sorted: a.jpg first), inside the new output folder
        assert [f["src"] for f in summary["failed"]] == ["memory:///a.png"]
        assert "also an earlier input's" in summary["failed"][0]["error"]
        assert sorted(fs.ls("/fresh/out", detail=False)) == ["/fresh/out/.aecodec-job", "/fresh/out/a.aec", "/fresh/out/b.aec"]
    fs.rm(["/a.png", "/a.jpg", "/b.png", "/fresh"], recursive=True)


def test_an_interrupted_run_is_finished_by_the_next(client, tmp_path):
    src, dest = tmp_path / "in", tmp_path / "out"
    images = collection_folder(src, good=16)

    def interrupt(counts: dict) -> None:
        if counts["done"] >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cluster.compress(client, [str(src)], str(dest), progress=interrupt, files_per_task=1)
    coded = len(list(dest.rglob("*.aec")))
    assert 4 <= coded < 16
    summary = cluster.compress(client, [str(src)], str(dest))
    assert summary["skipped"] >= 4 and summary["files"] + summary["skipped"] == 16
    for rel, pixels in images.items():
        assert np.asarray(aecodec.decompress((dest / rel).with_suffix(".aec").read_bytes())).shape == pixels.shape
    assert not leftovers(dest)
