"""The typed schema of the ``model``, ``data``, ``aug`` and ``optim`` groups, and of the run's
own keys: each field's type, default and allowed range live here, once, beside the field.

The YAML files only choose values. Hydra composes every group onto its dataclass (registered
in the ConfigStore as ``<group>/schema``), so a value of the wrong type or an unknown key is
refused while composing; the ranges and the checks across fields run when a config is built
(``from_dict``, ``__post_init__``). Constructors take these objects (``NKATViT(ModelConfig)``),
so a new setting is one field here plus the code that uses it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from nkat_lightning.errors import ConfigError

#: Each conv stem: (out_channels, stride) of its 3x3 conv + BatchNorm + GELU layers (seed notes).
STEM_LAYERS: dict[str, list[tuple[int, int]]] = {
    "off": [],
    "tiny": [(32, 2), (64, 2)],
    "small": [(64, 2), (128, 2), (128, 1)],
    "deep": [(32, 2), (64, 2), (128, 2)],  # 8x smaller map: 16 tokens on 28 and 32 px
    "deep_full": [(16, 1), (32, 2), (64, 2), (128, 2)],  # deep after a full-resolution conv
}
FILTER_MODES = ("always", "train")
EMNIST_SPLITS = {"byclass": 62, "bymerge": 47, "balanced": 47, "letters": 26, "digits": 10,
                 "mnist": 10}  # classes per split (letters: torchvision's "N/A" dropped)
DATA_SETS = ["mnist", "fashion_mnist", "emnist", "cifar10"]  # conf/data, the suite's order
MAX_SEED = 2**32 - 1  # numpy's bound, which Lightning's seed_everything enforces


@dataclass(frozen=True)
class Bounds:
    """The values a field allows: numeric bounds and/or a set of choices."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    aliases: tuple = ()  # (written, meant) pairs, e.g. (False, "off"): YAML 1.1 reads off as false
    null_means: str = "off"  # what null stands for, where the field allows it
    words: tuple = ()  # words allowed besides the numeric range, e.g. ("auto",)
    integer: bool = False  # the numbers allowed are integers (for fields typed Any)

    def meant(self, value):
        return next((m for w, m in self.aliases if value is w), value)

    def allows(self, value) -> bool:
        if isinstance(value, str) and value in self.words:
            return True
        if self.choices is not None:
            return self.meant(value) in self.choices
        if self.integer and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return not any(b is not None for b in (self.ge, self.gt, self.le, self.lt))
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self, kind: str) -> str:
        """``an integer >= 1``, ``a number in [0, 1)``, ``one of off, tiny, small``."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c).lower() if isinstance(c, bool) else str(c)
                                         for c in self.choices)
        if self.words:
            return " or ".join(self.words) + " or " + dataclasses.replace(self, words=()).describe(
                "an integer" if self.integer else kind)
        low = f"[{number(self.ge)}" if self.ge is not None else (
            f"({number(self.gt)}" if self.gt is not None else None)
        high = f"{number(self.le)}]" if self.le is not None else (
            f"{number(self.lt)})" if self.lt is not None else None)
        if low and high:
            return f"{kind} in {low}, {high}"
        for bound, sign in ((self.ge, ">="), (self.gt, ">"), (self.le, "<="), (self.lt, "<")):
            if bound is not None:
                return f"{kind} {sign} {number(bound)}"
        return kind


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def stem_output_size(img_size: int, conv_stem: str) -> int:
    """Side of the stem's feature map (3x3 convs with padding 1)."""
    for _, stride in STEM_LAYERS[conv_stem]:
        img_size = (img_size - 1) // stride + 1
    return img_size


def setting(default=MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None, aliases=(),
            null_means="off", words=(), integer=False, factory=None):
    """A schema field with its allowed range (``metadata["bounds"]``)."""
    bounds = Bounds(ge, gt, le, lt, tuple(choices) if choices is not None else None, aliases,
                    null_means, tuple(words), integer)
    if factory is not None:
        return field(default_factory=factory, metadata={"bounds": bounds})
    return field(default=default, metadata={"bounds": bounds})


def kind_of(annotation) -> tuple[str, bool]:
    """(``an integer`` / ``a number`` / ``true or false`` / ..., whether null is allowed)."""
    optional = get_origin(annotation) is not None and type(None) in get_args(annotation)
    if optional:
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a word"}
    return names.get(annotation, "a value"), optional


def field_bounds(f: dataclasses.Field) -> Bounds:
    return f.metadata.get("bounds", Bounds())


def fix_hint(schema: type, name: str) -> str:
    """``give an integer >= 1`` (``, or null for off``) for the field ``name`` of ``schema``."""
    hints = get_type_hints(schema)
    kind, optional = kind_of(hints[name])
    bounds = field_bounds(next(f for f in dataclasses.fields(schema) if f.name == name))
    return f"give {bounds.describe(kind)}" + (
        f", or null for {bounds.null_means}" if optional else "")


class Schema:
    """What every schema dataclass shares: its range checks and building from a dict."""

    GROUP = ""  # the config group the fields live in: ``model``, ``data``, ...

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = field_bounds(f).meant(getattr(self, f.name))
            setattr(self, f.name, value)
            self.check_range(f, value)
        self.check_across_fields()

    @classmethod
    def check_range(cls, f: dataclasses.Field, value) -> None:
        if value is not None and not field_bounds(f).allows(value):
            cls.fail(f.name, value, fix_hint(cls, f.name), "is out of range")

    def check_across_fields(self) -> None:
        """Checks that involve several fields (each once, here)."""

    @classmethod
    def fail(cls, name: str, value, fix: str, problem: str = "is invalid") -> None:
        key = f"{cls.GROUP}.{name}" if cls.GROUP else name
        raise ConfigError(f"{key}: {value!r} {problem}; {fix}")

    @classmethod
    def coerce(cls: type[T], value: T | dict) -> T:
        """``value`` itself when it is this config already, else the config built from it."""
        return value if isinstance(value, cls) else cls.from_dict(value)

    def to_dict(self) -> dict:
        """Plain values (for hyperparameters, JSON and ``torch.load(weights_only=True)``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[T], values: dict) -> T:
        """The checked config from plain values (a resolved group, a checkpoint's hparams)."""
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
        except OmegaConfBaseException as error:  # an unknown key, a wrong type
            raise ConfigError(omegaconf_message(error, cls.GROUP)) from None


T = TypeVar("T", bound=Schema)


class ModelPart(Schema):
    """A part of the ``model`` group."""

    GROUP = "model"


@dataclass
class AttentionConfig(ModelPart):
    """NKAT attention (models/attention.py)."""

    temperature: float = setting(1.0, gt=0)  # logits / temperature
    learnable_temperature: bool = False
    top_k: int | None = setting(None, ge=1)  # keep the k largest logits per query row
    top_p: float | None = setting(None, gt=0, le=1)  # nucleus mass; 1.0 = off
    filter_mode: str = setting("always", choices=FILTER_MODES)  # train: filters in training only
    nkat_strength: float = setting(0.0, ge=0)  # c = nkat_strength * nkat_decay ** layer
    nkat_decay: float = setting(1.0, ge=0)
    split_heads: bool = False  # RGB: head groups per colour channel + one shared


@dataclass
class EmbedConfig(ModelPart):
    """Colour-wise LayerNorm, conv stem and patch projection (models/embedding.py)."""

    img_size: int = setting(28, ge=1)
    in_chans: int = setting(1, ge=1)
    patch_size: int = setting(1, ge=1)  # on the stem's feature map (the data set picks it)
    conv_stem: Any = setting("deep_full", choices=tuple(STEM_LAYERS), aliases=((False, "off"),))
    stem_width: int | None = setting(None, ge=1, null_means="the stem's own widths")
    color_norm: Any = setting("auto", choices=("auto", True, False))  # auto = on for RGB

    def uses_colour_norm(self) -> bool:
        return self.in_chans == 3 if self.color_norm == "auto" else bool(self.color_norm)

    def stem_layers(self) -> list[tuple[int, int]]:
        """(out channels, stride) per stem conv; ``stem_width`` scales every layer's width by
        the same factor, so a stem keeps its shape (tiny: w, 2w; small: w, 2w, 2w)."""
        layers = STEM_LAYERS[self.conv_stem]
        if self.stem_width is None or not layers:
            return list(layers)
        first = layers[0][0]
        return [(max(1, round(out * self.stem_width / first)), stride) for out, stride in layers]

    def check_across_fields(self) -> None:
        if self.stem_width is not None and self.conv_stem == "off":
            self.fail("stem_width", self.stem_width,
                      "set model.conv_stem=tiny, small, deep or deep_full with it, or drop "
                      "model.stem_width",
                      "needs a conv stem")
        side = stem_output_size(self.img_size, self.conv_stem)
        if side % self.patch_size:
            divisors = ", ".join(str(d) for d in range(1, side + 1) if side % d == 0)
            self.fail("patch_size", self.patch_size,
                      f"the {self.img_size}-px image leaves conv stem '{self.conv_stem}' "
                      f"(stride {math.prod(s for _, s in self.stem_layers())}x) as a {side}x{side} "
                      "map; use a "
                      f"divisor of {side} ({divisors}) or drop the override to get the data "
                      "set's default", "does not tile the token grid")


@dataclass
class TransformerConfig(ModelPart):
    """The ViT body around the attention (timm's ``VisionTransformer``)."""

    num_classes: int = setting(10, ge=2)
    embed_dim: int = setting(128, ge=1)
    depth: int = setting(2, ge=1)
    num_heads: int = setting(4, ge=1)
    mlp_ratio: float = setting(2.0, gt=0)
    dropout_attn: float = setting(0.0, ge=0, lt=1)
    dropout_embed: float = setting(0.0, ge=0, lt=1)
    drop_path: float = setting(0.0, ge=0, lt=1)
    # what the head reads: the class token, or the mean of the patch tokens (timm's global_pool)
    global_pool: str = setting("token", choices=("token", "avg"))


@dataclass
class ModelConfig(AttentionConfig, TransformerConfig, EmbedConfig):
    """The NKAT-ViT (models/nkat_vit.py): embedding, body, attention; its keys stay flat
    (``model.top_k``)."""

    # how to run it, not what it is: checkpoints are the same either way
    compile: bool = False  # torch.compile the network (parameter names unchanged)
    # channels-last conv weights and input batch: the default job ran 8 % faster on the CPU
    # (paired runs), and cuDNN's bf16 convolutions prefer it; no result changes
    channels_last: bool = True

    def check_across_fields(self) -> None:
        super().check_across_fields()
        if self.embed_dim % self.num_heads:
            self.fail("embed_dim", self.embed_dim, "give a multiple of model.num_heads="
                      f"{self.num_heads}", "is not divisible by the number of heads")
        if int(self.embed_dim * self.mlp_ratio) < 1:
            self.fail("mlp_ratio", self.mlp_ratio, f"give at least {1 / self.embed_dim:g} "
                      f"(the MLP's width is model.embed_dim * model.mlp_ratio)", "leaves no MLP")
        if self.split_heads and (self.in_chans != 3 or self.num_heads % 4):
            self.fail("split_heads", True, "it needs RGB input and model.num_heads divisible "
                      f"by 4 (3 colour groups + 1 shared); got in_chans={self.in_chans}, "
                      f"num_heads={self.num_heads}", "cannot be used here")



@dataclass
class DataConfig(Schema):
    """A data set and how it is loaded (data/base.py)."""

    GROUP = "data"
    _target_: str = MISSING
    name: str = MISSING
    root: str = MISSING
    # data-set facts
    img_size: int = setting(MISSING, ge=1)
    in_chans: int = setting(MISSING, choices=(1, 3))
    num_classes: int = setting(MISSING, ge=2)
    mean: list[float] = MISSING
    std: list[float] = MISSING
    natural_images: bool = MISSING  # flips and crops suit it (garments, objects; not digits, letters)
    default_patch_size: dict[str, int] = MISSING  # per conv stem
    # loading
    batch_size: int = setting(128, ge=1)
    eval_batch_size: int = setting(512, ge=1)
    # loader processes; auto: 0 on the CPU (the model's threads use every core, and a batch is
    # one indexing of an in-memory tensor), min(4, cores per device - 1) with a GPU
    num_workers: Any = setting("auto", ge=0, words=("auto",), integer=True)
    pin_memory: Any = setting("auto", choices=("auto", True, False))
    persistent_workers: bool = True
    val_size: int = setting(5000, ge=1)
    split_seed: int = setting(0, ge=0, le=MAX_SEED)
    offline_dirs: list[str] = field(default_factory=list)
    download: bool = True

    def check_across_fields(self) -> None:
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.in_chans:
                self.fail(name, list(getattr(self, name)),
                          f"give one value per channel ({self.in_chans})", "has the wrong length")
        if any(s <= 0 for s in self.std):
            self.fail("std", list(self.std), "give positive values", "holds a value <= 0")


@dataclass
class EMNISTDataConfig(DataConfig):
    split: str = setting("balanced", choices=tuple(EMNIST_SPLITS))


@dataclass
class RandAugmentConfig(Schema):
    GROUP = "aug.randaugment"
    n: int = setting(0, ge=0)  # ops per image (0 = off)
    m: int = setting(9, ge=0, le=30)  # magnitude


@dataclass
class AugConfig(Schema):
    """Augmentation packs (data/transforms.py). The defaults are the default job's pack,
    ``flip``; every other knob is off unless a pack sets it."""

    GROUP = "aug"
    name: str = "flip"
    crop_padding: int = setting(0, ge=0)  # natural images: random crop after padding, px
    hflip: float = setting(0.5, ge=0, le=1)  # natural images: horizontal flip probability
    affine_degrees: float = setting(0.0, ge=0, le=180)  # digits/letters: random rotation
    affine_translate: float = setting(0.0, ge=0, le=1)  # digits/letters: shift, fraction
    randaugment: RandAugmentConfig = field(default_factory=RandAugmentConfig)
    channel_shuffle: float = setting(0.0, ge=0, le=1)  # probability of permuting RGB
    cutout: int = setting(0, ge=0)  # side of the erased square, px (0 = off)
    mixup: float = setting(0.0, ge=0)  # Mixup alpha (0 = off)
    cutmix: float = setting(0.0, ge=0)  # CutMix alpha (0 = off)
    mix_prob: float = setting(1.0, ge=0, le=1)  # probability that a batch is mixed at all
    switch_prob: float = setting(0.5, ge=0, le=1)  # CutMix instead of Mixup when both are on


@dataclass
class OptimConfig(Schema):
    """AdamW with linear warm-up then cosine (training/module.py)."""

    GROUP = "optim"
    lr: float = setting(2.0e-3, gt=0)
    weight_decay: float = setting(0.05, ge=0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_epochs: float = setting(1.0, ge=0)
    min_lr_ratio: float = setting(0.01, ge=0, le=1)  # the cosine's floor, a fraction of lr
    label_smoothing: float = setting(0.1, ge=0, lt=1)
    ema: float = setting(0.0, ge=0, lt=1)  # EMA decay of the weights; 0 = off

    def check_across_fields(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            self.fail("betas", list(self.betas), "give two numbers in [0, 1), e.g. [0.9, 0.999]")


@dataclass
class GateConfig(Schema):
    GROUP = "gate"
    metric: str = "val_acc_best"  # a key of results.json
    threshold: float = 0.45


@dataclass
class RunConfig(Schema):
    """The run's own keys at the top of the train config."""

    task_name: str = "train"  # the first folder under logs/
    tags: list[str] = field(default_factory=list)
    group: str = "auto"  # W&B group; auto = the sweep folder's name in a multirun
    seed: int | None = setting(42, ge=0, le=MAX_SEED)  # 0 is a seed; null = no seeding
    optimized_metric: Any = "val/acc_best"  # what a sweeper gets: a name, or a list of names
    test_after_fit: bool = True  # test the best checkpoint after fitting
    gate: GateConfig | None = None  # results.json says whether gate.metric reached the threshold
    resume: str = "auto"  # auto: continue this run's last.ckpt | never | <checkpoint path>
    selective: Any = None  # the selective search's settings (search/selective.py)

    @classmethod
    def of(cls, resolved: dict) -> RunConfig:
        """The run keys of a resolved train config, checked."""
        return cls.from_dict({f.name: resolved[f.name] for f in dataclasses.fields(cls)
                              if f.name in resolved})


@dataclass
class TrainConfig(RunConfig):
    """The train config's root: the run keys, and a slot per config group (each group is
    checked by its own schema)."""

    data: Any = None
    model: Any = None
    aug: Any = None
    optim: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    paths: Any = None


#: Each schema group and its dataclass (the data group's by data set).
GROUP_SCHEMAS = {"model": ModelConfig, "data": DataConfig, "aug": AugConfig,
                 "optim": OptimConfig}


def schema_of(group: str, values) -> type[Schema]:
    """The dataclass of ``group`` for ``values`` (a dict or a config already)."""
    if isinstance(values, Schema):
        return type(values)
    if group == "data" and "split" in values:
        return EMNISTDataConfig
    return GROUP_SCHEMAS[group]


def closest_key(schema: type, name: str) -> str | None:
    names = [f.name for f in dataclasses.fields(schema)]
    match = difflib.get_close_matches(name, names, n=1)
    return match[0] if match else None


def register_schemas() -> None:
    """``<group>/schema`` in Hydra's ConfigStore, which each group's YAML lists first in its
    defaults."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)  # the root, listed first in train.yaml
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=schema)
    store.store(group="data", name="emnist_schema", node=EMNISTDataConfig)


register_schemas()


def schema_field(full_key: str) -> tuple[type[Schema], str] | None:
    """The schema dataclass and field name behind ``model.depth``, ``aug.randaugment.n``."""
    group, *path = full_key.split(".")
    schema = EMNISTDataConfig if group == "data" else GROUP_SCHEMAS.get(group)
    if schema is None or not path:
        return None
    for name in path[:-1]:
        schema = get_type_hints(schema).get(name)
        if not dataclasses.is_dataclass(schema):
            return None
    return schema, path[-1]


def omegaconf_message(error: OmegaConfBaseException, group: str = "") -> str:
    """``key: what is wrong; how to fix it`` for OmegaConf's refusal of a value or a key (the
    fix from the schema where it knows the key). ``group`` prefixes a key relative to it."""
    key = getattr(error, "full_key", "") or ""
    if group and not key.startswith(group + "."):
        key = f"{group}.{key}" if key else group
    found = schema_field(key)
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        close = closest_key(found[0], found[1]) if found else None
        parent = key.rpartition(".")[0]
        hint = ("this data set does not have it; list its settings with --cfg job"
                if found and close == found[1] else f"did you mean {parent}.{close}?" if close else
                "list the settings with --cfg job")
        return f"{key or 'config'}: no such setting; {hint}"
    problem = str(getattr(error, "msg", "") or error).splitlines()[0]
    known = found and found[1] in {f.name for f in dataclasses.fields(found[0])}
    fix = fix_hint(*found) if known and isinstance(error, ValidationError) else (
        "list the settings and their values with --cfg job")
    return f"{key or 'config'}: {problem}; {fix}"
