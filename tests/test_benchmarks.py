"""The benchmark scripts run end to end and print their ratios (speeds are not checked here:
they are measured by running the scripts, never by timed tests)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_throughput_prints_every_ratio_against_its_target():
    out = run_script("throughput.py", "--presets", "mnist", "--rounds", "1", "--steps", "1",
                     "--min-seconds", "0", "--batch", "8", "--no-startup")
    ratios = re.findall(r"^  (train|infer) (.+?) / (.+?): (\d+\.\d+) \(target >= ([\d.]+)\) (OK|BELOW)$",
                        out, flags=re.MULTILINE)
    assert len(ratios) == 6  # 3 targets x (train, infer)
    assert all(float(ratio) > 0 for *_, ratio, _target, _verdict in ratios)
    assert re.search(r"^  timm\s+\d+\s+\d+\s+-?\d+\s+-?\d+\s+\d+%, \d+%$", out, flags=re.MULTILINE)


@pytest.mark.slow
def test_pipeline_prints_loop_over_model_step_ratios():
    out = run_script("pipeline.py", "--batches", "2", "--rounds", "1")
    assert re.search(r"\(c\)/\(b\)", out), out
