import pytest

from pipelines.params import ParamsError, parse_params, validate_params


def check(data):
    params = parse_params(data)
    validate_params(params)
    return params


def test_defaults_are_valid():
    params = check({})
    assert params.ingest.sources[0].kind == "embedded"


@pytest.mark.parametrize("data, key", [
    ({"ingest": {"part_sise": 3}}, "ingest.part_sise: unknown key"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"export": {"shard_size": "many"}}, "export.shard_size"),
    ({"export": {"cell_size": 100}}, "export.cell_size"),
    ({"sample": {"rows": {1: 0.5, 2: 0.2}}}, "sample.rows"),
    ({"ingest": {"sources": [{"kind": "folder"}]}}, "ingest.sources.0"),
    ({"annotate": {"annotators": {"nope": {}}}}, "annotate.annotators.nope: unknown annotator"),
    ({"annotate": {"annotators": {"canny": {"params": {"low": 1}}}}}, "annotate.annotators.canny.params: low"),
    ({"annotate": {"annotators": {"canny": {"params": {"low_threshold": 900}}}}}, "low_threshold"),
    ({"sample": {"tasks": [{"name": "t", "path": ["depth", "image"]}]}}, "node type 'depth' is produced by no"),
    ({"sample": {"tasks": [{"name": "t", "path": ["nonsense", "image"]}]}}, "unknown node type 'nonsense'"),
    ({"sample": {"tasks": [{"name": "a.b", "path": ["canny", "image"]}]}}, "sample.tasks.0.name"),
    ({"annotate": {"annotators": {"foreground": {}}}}, "requires node type 'mask' which no configured"),
    ({"annotate": {"annotators": {"degrade_JPEG": {"online": True}, "foreground": {"online": True},
                                  "sam_boxes": {}, "grounding_owlv2": {}}}}, "foreground.online"),
])
def test_bad_params_name_the_key(data, key):
    data.setdefault("annotate", {}).setdefault("annotators", {"canny": {}})
    with pytest.raises(ParamsError) as err:
        check(data)
    assert key in str(err.value)


def test_dependencies_may_be_listed_before_their_producers():
    params = check({"annotate": {"annotators": {"foreground": {}, "sam_boxes": {}, "grounding_owlv2": {}}}})
    assert list(params.annotate.annotators) == ["foreground", "sam_boxes", "grounding_owlv2"]


def test_cli_reports_invalid_params(tmp_path, capsys):
    from pipelines.cli import main

    path = tmp_path / "params.yaml"
    path.write_text("ingest:\n  part_size: -1\n")
    assert main(["validate", "--params", str(path)]) == 2
    assert "ingest.part_size" in capsys.readouterr().err


def test_missing_inputs_and_corpora_fail_validation_naming_the_path(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.params import ParamsError, parse_params
    from pipelines.sources import check_inputs

    (tmp_path / "empty").mkdir()
    (tmp_path / "edits").mkdir()
    pq.write_table(pa.table({"src": [b"x"], "edited": [b"y"], "instruction": ["z"]}), tmp_path / "edits" / "a.parquet")
    corpus = {"kind": "parquet", "path": str(tmp_path / "edits" / "*.parquet"), "layout": "edit_pairs"}

    def sources(*extra):
        return {"ingest": {"sources": list(extra)}}

    cases = [(sources({"kind": "folder", "path": str(tmp_path / "nope")}), "no such file or folder"),
             (sources({"kind": "folder", "path": str(tmp_path / "empty")}), "holds no files"),
             (sources({**corpus, "path": str(tmp_path / "missing" / "*.parquet")}),
              f"ingest.sources.0.path: .*{tmp_path.name}/missing.*no such file"),
             (sources({"kind": "folder", "path": str(tmp_path / "empty"), "layout": "edit_pairs"}),
              "holds no record folders"),
             (sources(corpus), "no column 'source'"),  # a wrong column mapping, named before any work
             (sources({**corpus, "path": "pipe:cat x.tar"}), "only local files")]
    for data, message in cases:
        with pytest.raises(ParamsError, match=message):
            check_inputs(parse_params(data))
    check_inputs(parse_params(sources({**corpus, "columns": {"source": "src"}})))
    with pytest.raises(ParamsError, match="mine.corpora moved: .*layout: edit_pairs"):
        parse_params({"mine": {"corpora": [corpus]}})
