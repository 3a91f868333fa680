"""Smoke test of the benchmark harness: the raw JetStream benchmark on its own server, quick."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package; drop this once pytest has `pythonpath = ["."]`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import raw_jetstream
from benchmarks.harness import Result, apply_baselines, percentile, write_readme_table


@pytest.mark.asyncio
async def test_raw_jetstream_quick_results_are_sane() -> None:
    results = {r.name: r for r in await raw_jetstream.run(quick=True)}

    assert set(results) == {
        raw_jetstream.PUBLISH,
        raw_jetstream.CONSUME,
        raw_jetstream.PIPELINE,
        raw_jetstream.LATENCY,
    }
    for name in (raw_jetstream.PUBLISH, raw_jetstream.CONSUME, raw_jetstream.PIPELINE):
        # run() raises unless every message was stored once, consumed and acked.
        assert results[name].count == raw_jetstream.QUICK_COUNT
        assert results[name].rate == pytest.approx(raw_jetstream.QUICK_COUNT
                                                   / results[name].seconds)
    # A system row is reported against the raw limit measured in the same run: the ratio is
    # computed from the two measured rates (a row naming a limit not measured gets none).
    publish = results[raw_jetstream.PUBLISH]
    loop = Result.timed("loop", 50, 2.0, baseline=raw_jetstream.PIPELINE)
    orphan = Result.timed("orphan", 50, 2.0, baseline="not measured")
    apply_baselines([*results.values(), loop, orphan])
    assert loop.ratio_to_baseline == pytest.approx(25 / results[raw_jetstream.PIPELINE].rate)
    assert orphan.ratio_to_baseline is None
    assert 0 < loop.ratio_to_baseline < 1 < publish.rate / 25
    latency = results[raw_jetstream.LATENCY]
    assert latency.count == 100  # 100/s for 1 s
    assert latency.rate > 0
    assert latency.p50_ms is not None and latency.p99_ms is not None
    assert 0 < latency.p50_ms <= latency.p99_ms


def test_percentile_interpolates() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    assert percentile([7.0], 99) == 7.0


def test_apply_baselines_fills_ratio() -> None:
    base = Result.timed("raw", 100, 1.0)
    other = Result.timed("other", 100, 4.0, baseline="raw")
    apply_baselines([base, other])
    assert other.ratio_to_baseline == pytest.approx(0.25)


@pytest.mark.parametrize("nl", ["\n", "\r\n"])
def test_write_readme_table_replaces_only_between_markers(tmp_path: Path, nl: str) -> None:
    head = nl.join(["# Ensemble", "", "Intro with ünïcode.", "<!-- benchmarks:start -->"])
    tail = nl.join(["<!-- benchmarks:end -->", "", "## After", "trailing text", ""])
    readme = tmp_path / "README.md"
    readme.write_bytes(f"{head}{nl}old table{nl}{tail}".encode())
    results = [Result.timed("raw_jetstream.publish", 20_000, 0.5, ratio_to_baseline=1.0)]

    for _ in range(2):  # a second write replaces the first table, never appends
        assert write_readme_table(readme, results) is True
        text = readme.read_bytes().decode()
        assert text.startswith(head) and text.endswith(tail)
        middle = text[len(head) : -len(tail)]
        assert "old table" not in middle
        assert middle.count("| benchmark | count | throughput/s |") == 1
        assert "| raw_jetstream.publish | 20,000 | 40,000 |" in middle
        assert "Measured on" in middle
        if nl == "\r\n":
            assert "\n" not in middle.replace("\r\n", "")


@pytest.mark.parametrize(
    "content",
    [
        "# No markers here\n",
        "<!-- benchmarks:start -->\nonly a start\n",
        "<!-- benchmarks:end -->\nend before start\n<!-- benchmarks:start -->\n",
    ],
)
def test_write_readme_table_without_markers_leaves_file_alone(
    tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_bytes(content.encode())
    assert write_readme_table(readme, [Result.timed("x", 1, 1.0)]) is False
    assert readme.read_bytes() == content.encode()
    assert "not found" in capsys.readouterr().err


@pytest.mark.asyncio
async def test_floor_quick_measures_each_empty_step() -> None:
    # Each row checks its own work (every row stored, every POST 201, every email received)
    # and raises otherwise; here: the rows are there, and each reports its CPU per step.
    from benchmarks import floor

    results = {r.name: r for r in await floor.run(quick=True)}

    assert {"floor.sqlite.transaction", "floor.http.empty_post", "floor.smtp.email"} <= set(results)
    for result in results.values():
        assert result.count == 500
        assert 0 < result.p50_ms <= result.p99_ms  # type: ignore[operator]
        cpu_us = float(result.notes.rsplit("CPU ", 1)[1].split(" µs")[0])
        assert cpu_us > 0
