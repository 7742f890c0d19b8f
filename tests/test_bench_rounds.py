"""bench/: the figures of --rounds (per-round ratios, medians, the ratio range), the worker CPU
shares, and the single-connection scenario's load shape. Nothing is started or measured."""

from __future__ import annotations

from pathlib import Path

from bench import harness, report
from bench.load import LoadResult
from bench.procs import Supervisor
from bench.scenarios import DEFAULT_NAMES, NAMES, build
from bench.servers import ProcessCpu


def _run(rate: float) -> LoadResult:
    return LoadResult(
        duration_s=10.0,
        rate=rate,
        succeeded=int(rate * 10),
        failed=0,
        p50_ms=1.0,
        p99_ms=2.0,
        client_cpu_s=1.0,
    )


def _bench(tmp_path: Path, *argv: str) -> harness.Bench:
    return harness.Bench(harness.parse_args(list(argv)), Supervisor(tmp_path))


def test_ratio_is_the_median_of_the_rounds_ratios(tmp_path: Path) -> None:
    bench = _bench(tmp_path, "--rounds", "3", "--scenarios", "one", "--no-results")
    constant = report.Row("asgi", 1, "one", "constant")
    ratelimitd = report.Row("asgi", 1, "one", "ratelimitd")
    # The machine slows down between rounds: each round's ratio holds, a ratio of medians
    # across rounds would not.
    for number, base in enumerate((10_000.0, 8_000.0, 5_000.0), start=1):
        constant.rounds.append(report.Round(number, _run(base)))
    ratelimitd.rounds += [
        report.Round(1, _run(5_000.0)),
        report.Round(2, _run(4_400.0)),
        report.Round(3, _run(2_400.0)),
    ]
    bench.rows = [constant, ratelimitd]
    bench.compute_ratios()
    assert [round(r, 2) for r in ratelimitd.ratios] == [0.5, 0.55, 0.48]
    assert ratelimitd.ratio == 0.5
    assert ratelimitd.rate == 4_400.0
    assert constant.ratio is None
    assert any("vs constant by round: 0.50, 0.55, 0.48" in n for n in ratelimitd.notes)
    table = report.grpc_table(bench.rows)
    header, _, constant_line, ratelimitd_line = table.splitlines()
    assert "| constant " in constant_line
    assert "| vs constant | range " in header
    assert "| 0.50        | 0.48-0.55 |" in ratelimitd_line
    assert "worker CPU share" not in header


def test_rounds_pair_by_number_when_one_failed(tmp_path: Path) -> None:
    bench = _bench(tmp_path, "--rounds", "2", "--scenarios", "one", "--no-results")
    constant = report.Row("grpc", 1, "one", "constant", rounds=[report.Round(2, _run(1_000.0))])
    ratelimitd = report.Row("grpc", 1, "one", "ratelimitd")
    ratelimitd.rounds = [report.Round(1, _run(900.0)), report.Round(2, _run(400.0))]
    bench.rows = [constant, ratelimitd]
    bench.compute_ratios()
    assert ratelimitd.ratios == [0.4]


def test_worker_cpu_shares(tmp_path: Path) -> None:
    measured = report.Round(1, _run(1_000.0))
    warnings: list[str] = []
    notes: list[str] = []
    before = ProcessCpu({101: 5.0, 102: 1.0}, supervisor_s=0.5)
    after = ProcessCpu({101: 5.2, 102: 4.8}, supervisor_s=0.52)
    harness._worker_cpu(measured, before, after, warnings, notes)
    assert [round(c, 2) for c in measured.worker_cpu_s] == [0.2, 3.8]
    assert report.shares_text(measured.worker_shares) == "5% / 95%"
    assert not warnings
    assert notes == ["worker CPU s (start order): 0.20 / 3.80, supervisor 0.02 = 5% / 95%"]
    # Largest first, the median of each rank over the rounds, whichever worker it was.
    row = report.Row("asgi", 2, "single-connection", "ratelimitd")
    row.rounds = [
        report.Round(n, _run(1.0), worker_cpu_s=c)
        for n, c in enumerate(([0.2, 3.8], [4.0, 0.0], [3.0, 1.0]), start=1)
    ]
    assert report.shares_text(row.worker_shares) == "95% / 5%"
    assert "| 95% / 5%" in report.grpc_table([row])
    # A worker that restarted: a new pid, and a warning.
    harness._worker_cpu(measured, before, ProcessCpu({101: 6.0, 103: 1.0}), warnings, notes)
    assert warnings == ["worker processes changed during the run (one restarted?)"]


def test_single_connection_load_shape(tmp_path: Path) -> None:
    assert "single-connection" in NAMES
    assert "single-connection" not in DEFAULT_NAMES
    bench = _bench(tmp_path, "--clients", "4", "--streams", "2", "--threads", "2", "--no-results")
    single, one = build("single-connection"), build("one")
    assert single.messages == one.messages
    shape = bench._h2load(single)
    assert (shape.clients, shape.streams, shape.threads) == (1, 128, 1)
    shape = bench._h2load(one)
    assert (shape.clients, shape.streams, shape.threads) == (4, 2, 2)
