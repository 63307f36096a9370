"""benchmarks/cost_report.py: the cost table is computed from the result files it finds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _write_results(folder: Path) -> None:
    speed = [{"plain_s": p, "fast_s": f, "plain_score": 50.0 + k, "fast_score": 51.0 + k}
             for k, (p, f) in enumerate([(40.0, 10.0), (30.0, 10.0), (50.0, 10.0)])]  # ratios 4, 3, 5
    (folder / "trial_speed-avx2.json").write_text(json.dumps(speed))
    startup = {"machine": "Test CPU, 2 cores", "seconds": [5.0, 4.0, 6.0], "min": 4.0, "median": 5.0,
               "floor_min": 3.5, "floor_median": 3.75}
    (folder / "startup-saasbo.json").write_text(json.dumps(startup))


def test_rows_come_from_the_files_found(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cost_report

    _write_results(tmp_path)
    text = cost_report.report(tmp_path)
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, the two rows whose files exist
    assert "**3.00x (min), 4.00x (median) faster**" in lines[2] and "AMD EPYC" in lines[2]
    assert "plain 51.0 ± 1.0, fast 52.0 ± 1.0" in lines[2]
    assert "Test CPU, 2 cores" in lines[3] and "min 4.00 s, median 5.00 s" in lines[3]
    assert "--repeats 3 --out benchmarks/results/startup-saasbo.json" in lines[3]


def test_page_is_rewritten_between_its_markers_only(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import cost_report

    _write_results(tmp_path)
    page = tmp_path / "PAGE.md"
    page.write_text(f"# top\n{cost_report.BEGIN}\nold\n{cost_report.END}\n## after\n")
    cmd = [sys.executable, str(BENCHMARKS / "cost_report.py"), "--results", str(tmp_path), "--page", str(page)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    text = page.read_text()
    assert text.startswith(f"# top\n{cost_report.BEGIN}\n| what |") and text.endswith(f"{cost_report.END}\n## after\n")
    assert "old" not in text.split(cost_report.BEGIN)[1]
    page.write_text("# no markers\n")
    assert subprocess.run(cmd, capture_output=True, text=True).returncode != 0
