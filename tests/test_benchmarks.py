"""The benchmark scripts run end to end and print their ratios (speeds are not checked here:
they are measured by running the scripts, never by timed tests)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import throughput  # noqa: E402


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *args], capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_throughput_prints_tokens_every_ratio_and_the_count_of_targets_met():
    out = run_script("throughput.py", "--presets", "mnist", "--tokens", "64", "--rounds", "1",
                     "--steps", "1", "--min-seconds", "0", "--batch", "8", "--memory-rounds", "1",
                     "--no-startup")
    shapes = re.findall(r"^(mnist|64 patches): .*, patch (\d+), (\d+) tokens,", out, flags=re.MULTILINE)
    assert shapes == [("mnist", "7", "17"), ("64 patches", "4", "65")]
    ratios = re.findall(r"^  (train|infer) (.+?) / (.+?): (\d+\.\d+) \(target >= ([\d.]+)\) (OK|BELOW)$",
                        out, flags=re.MULTILINE)
    assert len(ratios) == 2 * 2 * len(throughput.TARGETS)
    assert all(float(ratio) > 0 for *_, ratio, _target, _verdict in ratios)
    assert re.search(r"^  timm\s+\d+\s+\d+\s+-?\d+\s+-?\d+\s+\d+%, \d+%$", out, flags=re.MULTILINE)
    assert len(re.findall(r"^  peak training memory \(a\) plain / timm: \d+\.\d+$", out,
                          flags=re.MULTILINE)) == 2
    met = re.search(r"^targets met: (\d+) of (\d+)$", out, flags=re.MULTILINE)
    assert met and int(met[2]) == len(ratios)
    assert len(re.findall(r"^  missed: ", out, flags=re.MULTILINE)) == int(met[2]) - int(met[1])


def test_every_token_count_the_benchmark_offers_builds_that_many_patches():
    for size, _ in throughput.TOKEN_SHAPES:
        for patch in (p for p in range(1, size + 1) if size % p == 0 and size // p <= 16):
            patches = (size // patch) ** 2
            model = throughput.build(throughput.shape_model_config(throughput.token_shape(patches)),
                                     "(a) plain")
            assert model.patch_embed.num_patches == patches
            assert throughput.token_count(model) == patches + 1


def test_an_impossible_token_count_is_refused_with_the_possible_ones():
    with pytest.raises(SystemExit, match=r"--tokens 50: .* give one of 1, 4, 16, 49, 64"):
        throughput.token_shape(50)


@pytest.mark.slow
def test_pipeline_prints_the_loop_ratio_for_every_data_set_and_pack():
    import pipeline

    out = run_script("pipeline.py", "--batches", "1", "--rounds", "1", "--batch-size", "16")
    rows = re.findall(r"^(\w+), aug=(\w+) +\d+ +\d+ +\d+ +(\d+\.\d{3}) +\d+\.\d{3}-\d+\.\d{3} "
                      r">= (\d\.\d\d) (OK|BELOW) +-?\d+\.\d+ ", out, flags=re.MULTILINE)
    assert {(data, pack) for data, pack, *_ in rows} == {
        (data, pack) for data in pipeline.DATA_SETS for pack in pipeline.PACKS}
    for _data, pack, ratio, target, verdict in rows:
        assert float(target) == pipeline.TARGETS.get(pack, pipeline.DEFAULT_TARGET)
        assert (float(ratio) >= float(target)) == (verdict == "OK")
    assert len(re.findall(r"RandAugment 2 9 \d+\.\d+ ms; Cutout 8 px \d+\.\d+ ms \(masked fill\), "
                          r"\d+\.\d+ ms \(timm's RandomErasing\)", out)) == 2  # grey 28, RGB 32
    met = re.search(r"met in (\d+) of (\d+) cases", out)
    assert met and int(met[2]) == len(rows) == len(pipeline.DATA_SETS) * len(pipeline.PACKS)


def test_interleaved_timer_leaves_out_warmup_and_the_bare_steps(monkeypatch):
    """Lightning's hook order, faked on a clock: the loop's time per batch runs from one batch
    start to the next, less the bare step run after the batch; the warm-up batches count
    neither."""
    import pipeline

    clock = [0.0]
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: clock[0])

    def bare_step():
        clock[0] += 0.25
        return 0.25

    timer = pipeline.InterleavedTimer(bare_step)
    for batch_idx in range(pipeline.WARMUP + 4):
        clock[0] += 0.5  # loader and transform
        timer.on_train_batch_start(None, None, None, batch_idx)
        clock[0] += 1.0  # the loop's step and hooks
        timer.on_train_batch_end(None, None, None, None, batch_idx)
    assert timer.loop == [1.5] * 3 and timer.bare == [0.25] * 4


def test_startup_prints_every_command_against_import_lightning():
    out = run_script("startup.py", "--rounds", "1")
    rows = re.findall(r"^(nkat-\S+ .+?)\s+(\d+\.\d+)\s+(\d+\.\d+) (OK|ABOVE) \(target <= 0.3\)$",
                      out, flags=re.MULTILINE)
    import startup

    assert len(rows) == len(startup.SCRIPTS) + 1  # every --help and one config error
    met = re.search(r"^targets met: (\d+) of (\d+)$", out, flags=re.MULTILINE)
    assert met and int(met[2]) == len(rows)

