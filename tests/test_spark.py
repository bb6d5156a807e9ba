"""The snapshot build on Spark (kv_app/stores/spark.py), in local mode (local[2]), against
the text build of the same rows: the same data version, pairs and shard maps, every id
exact through the real server; bad rows refused with one line and nothing published; the
module entry point over a text file and a Parquet file. Skips without pyspark or java."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from conftest import EXAMPLE_DATA, run_in_group
from kv_app import loader
from kv_app.client import KVClient
from kv_app.keys import canonical_key
from kv_app.stores import spark as spark_build
from kv_app.stores.build import build
from kv_app.stores.snapshot import SnapshotError, open_snapshot, read_manifest
from kv_app.stores.versions import current_version

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="no java on PATH: Spark needs a JRE (Debian: apt-get install default-jre-headless)",
)
K = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a0"  # + a hex digit
GOOD = [(K + "1", "one"), (K + "2", ""), ("9" + K[1:] + "3", "tab\tand\rcarriage return")]


@pytest.fixture(scope="module")
def spark():
    """One local[2] session for the module, stopped with its JVM at the end."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install kv-app[spark])")
    from pyspark import SparkContext

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        session = spark_build.local_session(
            "local[2]", {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"}
        )
        gateway = SparkContext._gateway
        try:
            yield session
        finally:
            session.stop()
            gateway.shutdown()
            gateway.proc.stdin.close()  # the JVM exits when its stdin closes
            try:
                gateway.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.proc.kill()
                gateway.proc.wait()
            SparkContext._gateway = SparkContext._jvm = None


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return loader.load(EXAMPLE_DATA)[0]


@pytest.fixture(scope="module")
def sorted_text(example, tmp_path_factory) -> Path:
    """example.data's rows written sorted by key: their canonical text."""
    path = tmp_path_factory.mktemp("text") / "sorted.data"
    path.write_text("".join(f"{k} {example[k]}\n" for k in sorted(example)), "utf-8")
    return path


@pytest.fixture(scope="module")
def frame(spark, example):
    """example.data's rows as a DataFrame, shuffled, every 7th id upper-case."""
    rows = list(example.items())
    random.Random(15).shuffle(rows)
    rows = [(k.upper() if i % 7 == 0 else k, v) for i, (k, v) in enumerate(rows)]
    return spark.createDataFrame(rows, "id string, value string")


def test_one_shard_serves_every_id_exactly(frame, example, sorted_text, tmp_path, start_server):
    number, manifest = spark_build.write_snapshot(frame, tmp_path / "root", name="example rows")
    text = build(sorted_text, tmp_path / "text")
    assert number == 1 and manifest["pairs"] == len(example) == 10_000
    assert manifest["source"]["sha256"] == text["source"]["sha256"]
    assert manifest["source"]["size"] == sorted_text.stat().st_size
    assert manifest["source"]["name"] == "example rows"
    assert dict(open_snapshot(tmp_path / "root")) == dict(open_snapshot(tmp_path / "text"))

    server = start_server(tmp_path / "root")
    ready = requests.get(server.url + "/readyz", timeout=10).json()
    assert (ready["version"], ready["pairs"]) == (text["source"]["sha256"][:16], 10_000)
    assert KVClient(server.url).get_many(list(example)) == example


def test_two_shards_are_what_the_text_build_makes(frame, example, sorted_text, tmp_path):
    number, whole = spark_build.write_snapshot(frame, tmp_path / "root", shards=2)
    build(sorted_text, tmp_path / "text", shards=2)
    assert (whole["pairs"], whole["shards"]) == (10_000, 2)
    assert whole["source"]["name"] == "a Spark DataFrame"
    for index in range(2):
        ours = read_manifest(tmp_path / "root" / "current" / f"shard-{index}")
        theirs = read_manifest(tmp_path / "text" / f"shard-{index}")
        for field in ("pairs", "shard", "shard_map", "example_key"):
            assert ours[field] == theirs[field], field
        for field in ("sha256", "size"):
            assert ours["source"][field] == theirs["source"][field], field
        store = open_snapshot(tmp_path / "root" / "current" / f"shard-{index}")
        held = {k: v for k, v in example.items() if k[0] in ours["shard"]["digits"]}
        assert len(store) == len(held) > 4000
        assert dict(store) == held


@pytest.mark.parametrize("shards", [2, 16])
def test_each_shard_has_a_task_of_its_own(spark, shards):
    """The partition values _spread picks land, by the job's own repartition, in the
    partition of their shard's index."""
    from pyspark.sql import functions as F

    parts = spark_build._spread(spark, shards)
    frame = spark.createDataFrame([(p,) for p in parts], "part long").repartition(shards, "part")
    landed = {
        r.part: r.at for r in frame.select("part", F.spark_partition_id().alias("at")).collect()
    }
    assert [landed[p] for p in parts] == list(range(shards))


@pytest.fixture(scope="module")
def published(spark, tmp_path_factory) -> Path:
    """A root whose version-1 holds GOOD: what a refused build must leave as it is."""
    root = tmp_path_factory.mktemp("refused") / "root"
    frame = spark.createDataFrame(GOOD, "id string, value string")
    assert spark_build.write_snapshot(frame, root, shards=2)[0] == 1
    return root


@pytest.mark.parametrize(
    "row, message",
    [
        ((K.upper() + "1", "again"), f"duplicate id {K}1"),
        (("not-a-uuid", "x"), "malformed id 'not-a-uuid': expected a UUID such as "),
        ((None, "x"), "malformed id None: expected a UUID"),
        ((K + "4", None), f"id {K}4: the value is null"),
        ((K + "4", "x" * 25), f"id {K}4: value of 25 bytes, over KV_MAX_VALUE_BYTES \\(24\\)"),
        ((K + "4", "two\nlines"), f"id {K}4: the value holds a line break"),
        ((K + "4", "ends in CR\r"), f"id {K}4: the value ends with CR"),
        ((K + "4", "NUL\x00"), f"id {K}4: the value holds a NUL byte"),
    ],
)
def test_a_bad_row_fails_with_one_line_and_publishes_nothing(spark, published, row, message):
    before = sorted(p.name for p in published.iterdir())
    frame = spark.createDataFrame([*GOOD, row], "id string, value string")
    with pytest.raises(SnapshotError) as refused:
        spark_build.write_snapshot(frame, published, shards=2, max_value_bytes=24, name="rows")
    assert "\n" not in str(refused.value)
    assert refused.match(f"^rows: {message}")
    assert current_version(published) == 1
    assert sorted(p.name for p in published.iterdir()) == before


def test_a_repeat_across_batches_is_found(spark, published):
    """Arrow batches of one row: the writer compares each batch's first key with the last."""
    frame = spark.createDataFrame([*GOOD, (K + "2", "again")], "id string, value string")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1")
    try:
        with pytest.raises(SnapshotError, match=f"^a Spark DataFrame: duplicate id {K}2$"):
            spark_build.write_snapshot(frame, published)
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert current_version(published) == 1


def test_columns_must_be_there_and_hold_strings(spark, published):
    frame = spark.createDataFrame([(K + "1", 1)], "id string, n int")
    with pytest.raises(SnapshotError, match="^x: no column 'value' \\(it has id, n\\)$"):
        spark_build.write_snapshot(frame, published, name="x")
    with pytest.raises(SnapshotError, match="^x: column 'n' holds int, expected strings$"):
        spark_build.write_snapshot(frame, published, value_col="n", name="x")


def test_the_entry_point_over_a_text_file(spark, sorted_text, tmp_path):
    """`python -m kv_app.stores.spark`: a JVM of its own (besides the module's session),
    every process of it stopped."""
    command = [sys.executable, "-m", "kv_app.stores.spark", str(EXAMPLE_DATA), str(tmp_path)]
    run = run_in_group([*command, "--shards", "2", "--master", "local[2]"], timeout=120)
    out, err = run.stdout, run.stderr
    assert run.returncode == 0, err
    text = build(sorted_text, tmp_path / "text", shards=2)
    said = out.splitlines()
    assert said[0].startswith(f"10,000 pairs from {EXAMPLE_DATA} in ")
    assert said[0].endswith(f" MB, version {text['source']['sha256'][:16]}")
    assert said[1:] == [f"published {tmp_path}/version-1; current -> version-1"]
    for index in range(2):
        shard = f"shard-{index}"
        assert dict(open_snapshot(tmp_path / "current" / shard)) == dict(
            open_snapshot(tmp_path / "text" / shard)
        )


def test_the_entry_point_over_a_parquet_file(spark, example, tmp_path, capsys):
    frame = spark.createDataFrame(sorted(example.items()), "id string, value string")
    frame.repartition(3).write.parquet(str(tmp_path / "rows.parquet"))
    root = tmp_path / "root"
    assert spark_build.main([str(tmp_path / "rows.parquet"), str(root), "--format", "parquet"]) == 0
    assert "published" in capsys.readouterr().out
    manifest = json.loads((root / "current" / "manifest.json").read_text())
    assert manifest["source"]["name"] == "rows.parquet" and manifest["pairs"] == 10_000
    assert dict(open_snapshot(root)) == example


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"no-space-at-all", "no space between key and value"),
        (b"xyz value", "key is not a UUID (8-4-4-4-12 hex digits): 'xyz'"),
        (f"{K}3 \xff".encode("latin-1"), "invalid UTF-8 at byte 38 of the line"),
        (f"{K}3 {'x' * 9}".encode(), "value of 9 bytes, over KV_MAX_VALUE_BYTES (8)"),
    ],
)
def test_a_bad_text_line_is_quoted(spark, tmp_path, capsys, line, reason):
    path = tmp_path / "bad.data"
    path.write_bytes(f"{K}1 one\n".encode() + line + f"\n{K}2 two\n".encode())
    argv = [str(path), str(tmp_path / "root"), "--max-value-bytes", "8"]
    assert spark_build.main(argv) == 1
    shown = line.decode("utf-8", "replace")
    assert capsys.readouterr().err == f"Error: bad.data: line {shown!r}: {reason}\n"
    assert current_version(tmp_path / "root") is None
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [".lock"]


def test_a_text_file_as_the_text_build_reads_it(spark, tmp_path, capsys):
    """Upper-case ids, a byte-order mark, "\\r" inside a value, no final newline."""
    rows = {K + "1": "one\rcarriage", K + "2": "", K + "3": "last"}
    lines = [f"{k.upper() if k.endswith('1') else k} {v}" for k, v in rows.items()]
    (tmp_path / "rows.data").write_bytes(loader.BOM + "\n".join(lines).encode())
    assert spark_build.main([str(tmp_path / "rows.data"), str(tmp_path / "root")]) == 0
    assert dict(open_snapshot(tmp_path / "root")) == rows
    assert all(canonical_key(k) == k for k in open_snapshot(tmp_path / "root"))
