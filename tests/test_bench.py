"""The benchmark suite runs end to end and reports consistent figures.

Timings are never asserted: the machine may be busy. What is checked is
that every workload produces positive figures and that ratios follow from
them.
"""

import json

import pytest
from bprop import bench
from bprop.cli import main


def test_quick_run_reports_every_group():
    rows = bench.run(("gemm", "epoch", "predict", "memory"), quick=True, networks=("tiny",))
    groups = {row.group for row in rows}
    assert groups == {"sgemm", "epoch", "predict", "memory"}
    for row in rows:
        assert row.figures["bprop"] > 0, row
        assert "numpy" in row.figures or row.group == "memory"
        for peer in ("numpy", "torch"):
            if peer in row.figures:
                mine, theirs = row.figures["bprop"], row.figures[peer]
                expected = theirs / mine if row.lower_is_better else mine / theirs
                assert row.ratio(peer) == pytest.approx(expected)


def test_memory_row_compares_with_its_bound():
    (row,) = bench.bench_memory(("tiny",))
    assert row.unit == "MB"
    assert 0 <= row.figures["bprop"] < 10 * row.figures["bound"]


def test_cli_json_output(capsys):
    assert main(["bench", "--quick", "--json", "--only", "predict"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["environment"]["simd"] in ("generic", "avx2", "avx512")
    assert {row["group"] for row in data["rows"]} == {"predict"}
    assert all(row["figures"]["bprop"] > 0 for row in data["rows"])


def test_cli_table_and_bad_group(capsys):
    assert main(["bench", "--quick", "--only", "gemm"]) == 0
    out = capsys.readouterr().out
    assert "sgemm: square n=128" in out and "vs numpy" in out
    with pytest.raises(SystemExit) as info:
        main(["bench", "--only", "gemmm"])
    assert info.value.code == 2
    assert "subset of gemm,epoch,predict,memory" in capsys.readouterr().err


def test_toolkit_row_compares_the_rich_epoch_with_the_plain_one():
    (row,) = bench.run(("toolkit",), quick=True)
    assert row.group == "toolkit" and "batch norm" in row.name
    assert row.figures["bprop"] > 0 and row.figures["baseline"] > 0
    assert row.figures["bound"] == pytest.approx(row.figures["baseline"] / 1.5)
    assert row.ratio("baseline") == pytest.approx(
        row.figures["bprop"] / row.figures["baseline"]
    )
