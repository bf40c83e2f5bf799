"""Part files appear whole or not at all, however they are written."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.store import NODE_SCHEMA, part_writer, write_table


def rows(ids: list[str]) -> pa.Table:
    return pa.Table.from_pylist([{"image_id": i, "node_type": "gray", "data": i.encode() * 1000, "format": "png",
                                  "width": 1, "height": 1, "meta": "{}", "annotator": "grayscale",
                                  "annotator_version": "1", "params_hash": "h", "seconds": 0.0, "error": None}
                                 for i in ids], schema=NODE_SCHEMA)


def test_streamed_part_holds_every_batch_as_one_row_group(tmp_path):
    path = tmp_path / "part-00000.parquet"
    with part_writer(path, NODE_SCHEMA) as write:
        for batch in (["a", "b"], ["c"], ["d", "e"]):
            write(rows(batch))
        assert not path.exists()  # not visible until the block ends
    assert pq.read_table(path)["image_id"].to_pylist() == list("abcde")
    assert pq.ParquetFile(path).num_row_groups == 3
    write_table(rows(list("abcde")), tmp_path / "whole.parquet")
    assert pq.read_table(path).equals(pq.read_table(tmp_path / "whole.parquet"))


def test_a_failed_stream_leaves_no_part_and_no_temp_file(tmp_path):
    path = tmp_path / "part-00000.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        with part_writer(path, NODE_SCHEMA) as write:
            write(rows(["a"]))
            raise RuntimeError("killed mid-part")
    assert list(tmp_path.iterdir()) == []
