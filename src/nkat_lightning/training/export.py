"""Exporting a trained network: ONNX (dynamic batch) or ``torch.export``'s program, checked
against PyTorch on real test images."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nkat_lightning.data import build_datamodule
from nkat_lightning.errors import UserError
from nkat_lightning.training.checkpointing import read_checkpoint
from nkat_lightning.training.evaluate import load_module, load_run
from nkat_lightning.training.results import print_results

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}  # pt2: torch.export's ExportedProgram
EXPORT_KEYS = ["format", "weights", "params", "check_images", "max_abs_diff", "tolerance"]
EXTRA_HINT = "install the export extra: pip install 'nkat-lightning[export]'"


def test_images(data_cfg: dict, count: int) -> torch.Tensor:
    """The first ``count`` test images of the run's data set, as the model takes them."""
    datamodule = build_datamodule(data_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    images, _ = datamodule.test_set.__getitems__(list(range(min(count, len(datamodule.test_set)))))
    return datamodule.to_model_input(images, train=False)


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    """ONNX through torch.export (the batch dimension dynamic), with the data set's facts
    (mean, std, classes) in its metadata, so a user of the file knows its input."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"--format onnx needs onnx and onnxscript; {EXTRA_HINT}") from None
    program = torch.onnx.export(net, (example,), dynamo=True, verbose=False, input_names=["images"],
                                output_names=["logits"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"checking the ONNX file needs onnxruntime; {EXTRA_HINT}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])


def export_program(net: torch.nn.Module, example: torch.Tensor, path: Path, metadata: dict) -> None:
    program = torch.export.export(net, (example,),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, str(path), extra_files={"metadata.json": json.dumps(metadata)})


def run_program(path: Path, images: torch.Tensor) -> torch.Tensor:
    return torch.export.load(str(path)).module()(images)


def export(target: Path, fmt: str = "onnx", out: Path | None = None, check_images: int = 256,
           tolerance: float = 1e-4, overrides: list[str] | None = None) -> dict:
    """Export the network of a run folder or checkpoint (its EMA weights when it had EMA) and
    compare the file's outputs with PyTorch's on real test images; a difference above
    ``tolerance`` is an error."""
    ckpt, cfg, run_dir = load_run(target, overrides or [])
    module = load_module(ckpt)
    ema = "current_model_state" in read_checkpoint(ckpt)  # Lightning's WeightAveraging
    net = module.net.eval().float().to(memory_format=torch.contiguous_format)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    images = test_images(data_cfg, check_images)
    out = out or (run_dir / "export" if run_dir.is_dir() else ckpt.parent) / f"model{FORMATS[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"data": data_cfg["name"], "img_size": data_cfg["img_size"],
                "in_chans": data_cfg["in_chans"], "mean": data_cfg["mean"],
                "std": data_cfg["std"], "input": "images scaled to [0, 1], then (x - mean) / std",
                "checkpoint": str(ckpt), "weights": "ema" if ema else "trained"}
    with torch.no_grad():
        (export_onnx if fmt == "onnx" else export_program)(net, images[:2], out, metadata)
        expected = net(images)
        actual = (run_onnx if fmt == "onnx" else run_program)(out, images)
    diff = float((actual - expected).abs().max())
    results = {"file": str(out), "format": fmt, "weights": metadata["weights"],
               "params": module.num_params, "check_images": len(images),
               "max_abs_diff": diff, "tolerance": tolerance}
    print_results(f"export: {ckpt}", {**results, "max_abs_diff": f"{diff:.2e}",
                                      "tolerance": f"{tolerance:.0e}"}, EXPORT_KEYS)
    print(f"wrote {out}")
    if not diff <= tolerance:
        raise UserError(f"{out}: the exported model's outputs differ from PyTorch's by {diff:.3g} "
                        f"(more than {tolerance:g}) on {len(images)} test images; report it as a "
                        "bug with the checkpoint's model settings")
    return results
