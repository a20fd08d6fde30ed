"""The settings an ablation compares: a full cross product of AVD(RGB) training axes.

Each axis lists values of one AVDConfig field (`lam`, `rec_loss`,
`gen_loss`, `num_frames`, `image_size`), E's widths, the preset or the
number of AVD training epochs; a cell is one value per axis. `num_frames`
and `image_sizes` None mean the preset's clip length and side; `widths`
("16-32-32-32": E's widths but the last, D mirrors them as the presets do)
None the preset's. `extra` adds single cells outside the product: each
changes some fields of the first cell (every axis at its first value), e.g.
{"rec_loss": "mean"}.
"""
from __future__ import annotations

import dataclasses
import itertools

from avd_tf.models.avd import GEN_LOSSES, REC_LOSSES
from avd_tf.models.presets import PRESETS, get_preset
from avd_tf.pipeline.demo import DemoSettings

# Axis name -> the cell key it sets (an AVDConfig field but for "preset",
# "widths" and "epochs"), in the order cells are named.
AXES = {"presets": "preset", "num_frames": "num_frames", "image_sizes": "image_size",
        "widths": "widths", "lams": "lam", "rec_losses": "rec_loss", "gen_losses": "gen_loss",
        "epochs": "epochs"}
SHORT = {"preset": "preset", "num_frames": "T", "image_size": "size", "widths": "widths",
         "lam": "lam", "rec_loss": "rec", "gen_loss": "gen", "epochs": "epochs"}
# The keys of a cell that describe E's (and D's) architecture and input.
ARCHITECTURE = ("preset", "num_frames", "image_size", "widths")
# Cell keys that are integers (the rest: lam a float, the others strings).
_INTEGER_KEYS = ("num_frames", "image_size", "epochs")


def parse_widths(text: str) -> tuple[int, ...]:
    """"16-32-32-32" -> (16, 32, 32, 32)."""
    try:
        widths = tuple(int(v) for v in str(text).split("-"))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ValueError(f"widths (--widths): expected positive widths joined by '-', "
                         f"e.g. 16-32-32-32, got {text!r}")
    return widths


def format_widths(widths) -> str:
    return "-".join(str(int(v)) for v in widths)


def config_overrides(cell: dict) -> dict:
    """The AVDConfig overrides of a cell or architecture (everything but the preset and epochs)."""
    overrides = {k: v for k, v in cell.items() if k not in ("preset", "widths", "epochs")}
    if cell.get("widths") is not None:
        widths = parse_widths(cell["widths"])
        overrides.update(encoder_filters=widths, decoder_filters=widths[::-1])
    return overrides


@dataclasses.dataclass(frozen=True)
class Grid:
    """Values per axis; `cells` is their cross product. Repeated values count once."""

    lams: tuple[float, ...] = (0.95, 1.0)
    rec_losses: tuple[str, ...] = ("sum",)
    gen_losses: tuple[str, ...] = ("nonsaturating",)
    num_frames: tuple[int | None, ...] = (None,)
    image_sizes: tuple[int | None, ...] = (None,)
    widths: tuple[str | None, ...] = (None,)
    presets: tuple[str, ...] = ("small",)
    epochs: tuple[int, ...] = (DemoSettings.avd_epochs,)
    extra: tuple[dict, ...] = ()

    def __post_init__(self):
        for axis in AXES:
            object.__setattr__(self, axis, tuple(dict.fromkeys(getattr(self, axis))))
            if not getattr(self, axis):
                raise ValueError(f"{axis} (--{axis}) is empty, so the grid has no cell")
        for name, values, known in (("presets", self.presets, tuple(PRESETS)),
                                    ("rec_losses", self.rec_losses, REC_LOSSES),
                                    ("gen_losses", self.gen_losses, GEN_LOSSES)):
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ValueError(f"{name} (--{name}): unknown {unknown[0]!r}; expected one of "
                                 f"{', '.join(known)}")
        for lam in self.lams:
            if not 0.0 <= float(lam) <= 1.0:
                raise ValueError(f"lams (--lams): lambda must be in [0, 1], got {lam}")
        for epochs in self.epochs:
            if int(epochs) < 1:
                raise ValueError(f"epochs (--epochs): must be >= 1, got {epochs}")
        for cell in self.extra:
            unknown = sorted(set(cell) - set(AXES.values()))
            if unknown:
                raise ValueError(f"extra cells (--extra_cells): unknown field {unknown[0]!r}; "
                                 f"expected {', '.join(AXES.values())}")
            try:  # each value is checked as the axis it belongs to
                Grid(**{axis: (cell[key],) for axis, key in AXES.items() if key in cell})
            except ValueError as error:
                raise ValueError(f"extra cells (--extra_cells): {error}") from None
        for preset in self.presets:
            for frames in self.num_frames:
                try:
                    get_preset(preset, num_frames=frames)
                except ValueError as error:
                    raise ValueError(f"num_frames (--num_frames): {error}") from None
            for size in self.image_sizes:
                try:
                    get_preset(preset, image_size=size)
                except ValueError as error:
                    raise ValueError(f"image_sizes (--image_sizes): {error}") from None
            for widths in self.widths:
                if widths is not None:
                    try:
                        get_preset(preset, **config_overrides({"widths": widths}))
                    except ValueError as error:
                        raise ValueError(f"widths (--widths): {error}") from None

    def _resolve(self, preset, frames, size, widths, lam, rec, gen, epochs) -> dict:
        config = get_preset(preset, num_frames=frames, image_size=size)
        return {"preset": preset, "num_frames": config.num_frames,
                "image_size": config.image_size,
                "widths": format_widths(config.encoder_filters) if widths is None else
                format_widths(parse_widths(widths)),
                "lam": float(lam), "rec_loss": rec, "gen_loss": gen, "epochs": int(epochs)}

    def cells(self) -> list[dict]:
        """One dict per cell: "preset", "widths" and AVDConfig fields, all resolved
        (`config_overrides` turns it into overrides)."""
        cells = []
        for values in itertools.product(*(getattr(self, axis) for axis in AXES)):
            cell = self._resolve(*values)
            if cell not in cells:
                cells.append(cell)
        first = {key: getattr(self, axis)[0] for axis, key in AXES.items()}
        for changes in self.extra:
            cell = {**first, **changes}
            cell = self._resolve(*(cell[key] for key in AXES.values()))
            if cell not in cells:
                cells.append(cell)
        return cells

    def architectures(self) -> list[dict]:
        """The distinct (preset, num_frames, widths) of the cells: what an untrained E depends on."""
        seen = []
        for cell in self.cells():
            arch = {key: cell[key] for key in ARCHITECTURE}
            if arch not in seen:
                seen.append(arch)
        return seen

    def label(self, setting: dict) -> str:
        """"lam=0.95 rec=sum": the setting's values on the axes that vary (lam always)."""
        cells = self.cells()
        shown = [key for key in AXES.values()
                 if key in setting and (key == "lam" or len({c[key] for c in cells}) > 1)]
        return " ".join(f"{SHORT[key]}={setting[key]:g}" if key == "lam"
                        else f"{SHORT[key]}={setting[key]}" for key in shown)


def folder_name(setting: dict) -> str:
    """A file-system-safe name of a setting, e.g.
    "small_T8_s32_w16-32-32-32_lam0.1_sum_nonsaturating_e10"."""
    parts = [setting["preset"], f"T{setting['num_frames']}", f"s{setting['image_size']}",
             f"w{setting['widths']}"]
    if "lam" in setting:
        parts += [f"lam{setting['lam']:g}", setting["rec_loss"], setting["gen_loss"],
                  f"e{setting['epochs']}"]
    return "_".join(parts)


def parse_cells(text: str) -> tuple[dict, ...]:
    """"lam=0.95,rec_loss=mean;gen_loss=saturating" -> ({"lam": 0.95, "rec_loss": "mean"}, ...)."""
    cells = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        cell = {}
        for item in part.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"extra cells (--extra_cells): expected field=value, got {item!r}")
            key, value = key.strip(), value.strip()
            try:
                cell[key] = (float(value) if key == "lam"
                             else int(value) if key in _INTEGER_KEYS else value)
            except ValueError:
                raise ValueError(f"extra cells (--extra_cells): {key} expects a number, "
                                 f"got {value!r}") from None
            if key == "widths":
                parse_widths(value)
        cells.append(cell)
    return tuple(cells)


__all__ = ["ARCHITECTURE", "AXES", "Grid", "config_overrides", "folder_name", "format_widths",
           "parse_cells", "parse_widths"]
