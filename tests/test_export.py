"""Export: ONNX (and torch.export's program) of the plain model and of each NKAT setting, with
EMA weights where the run had EMA, matching PyTorch on the run's test images."""

import json

import onnx
import pytest
from test_portable_model import NON_DEFAULT

from helpers import FAST, TINY_MODEL, compose_train
from nkat_lightning.training.export import export
from nkat_lightning.training.fit import train

SETTINGS = {"plain": {}, **{name: {name: value} for name, value in NON_DEFAULT.items()
                            if name != "split_heads"},  # split heads need RGB: its own case
            "all_with_ema": {**{k: v for k, v in NON_DEFAULT.items() if k != "split_heads"},
                             "ema": 0.9}}


def trained(tmp_path, synthetic_root, settings: dict, data: str = "mnist"):
    overrides = [f"{'optim' if key == 'ema' else 'model'}.{key}={json.dumps(value)}"
                 for key, value in settings.items()]
    cfg = compose_train([f"data={data}", *TINY_MODEL, *FAST, *overrides], tmp_path,
                        data_root=synthetic_root)
    train(cfg)
    return tmp_path / "run"


@pytest.mark.parametrize("case", SETTINGS)
def test_onnx_export_matches_pytorch(case, tmp_path, synthetic_root):
    run_dir = trained(tmp_path, synthetic_root, SETTINGS[case])
    results = export(run_dir, "onnx", check_images=40)
    assert results["max_abs_diff"] <= 1e-4 and results["check_images"] == 40
    assert results["weights"] == ("ema" if "ema" in SETTINGS[case] else "trained")
    model = onnx.load(results["file"])
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # a dynamic batch size
    assert json.loads({p.key: p.value for p in model.metadata_props}["data"]) == "mnist"


def test_split_heads_export_on_rgb(tmp_path, synthetic_root):
    run_dir = trained(tmp_path, synthetic_root, {"split_heads": True, "num_heads": 4,
                                                 "conv_stem": "off"}, data="cifar10")
    assert export(run_dir, "onnx", check_images=8)["max_abs_diff"] <= 1e-4


def test_torch_export_program(tmp_path, synthetic_root):
    run_dir = trained(tmp_path, synthetic_root, SETTINGS["all_with_ema"])
    results = export(run_dir / "checkpoints" / "last.ckpt", "pt2", out=tmp_path / "m.pt2",
                     check_images=8)
    assert results["file"] == str(tmp_path / "m.pt2") and results["max_abs_diff"] <= 1e-4
