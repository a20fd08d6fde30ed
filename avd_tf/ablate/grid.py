"""The settings an ablation compares: a full cross product of AVD(RGB) training axes.

Each axis lists values of one AVDConfig field (`lam`, `rec_loss`,
`gen_loss`, `num_frames`) or the preset; a cell is one value per axis.
`num_frames` None means the preset's clip length. `extra` adds single
cells outside the product: each changes some fields of the first cell
(every axis at its first value), e.g. {"rec_loss": "mean"}.
"""
from __future__ import annotations

import dataclasses
import itertools

from avd_tf.models.avd import GEN_LOSSES, REC_LOSSES
from avd_tf.models.presets import PRESETS
from avd_tf.models.training import resolve_config

# Axis name -> the AVDConfig field it sets, in the order cells are named.
AXES = {"presets": "preset", "num_frames": "num_frames", "lams": "lam",
        "rec_losses": "rec_loss", "gen_losses": "gen_loss"}
SHORT = {"preset": "preset", "num_frames": "T", "lam": "lam", "rec_loss": "rec",
         "gen_loss": "gen"}


@dataclasses.dataclass(frozen=True)
class Grid:
    """Values per axis; `cells` is their cross product. Repeated values count once."""

    lams: tuple[float, ...] = (0.95, 1.0)
    rec_losses: tuple[str, ...] = ("sum",)
    gen_losses: tuple[str, ...] = ("nonsaturating",)
    num_frames: tuple[int | None, ...] = (None,)
    presets: tuple[str, ...] = ("small",)
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
                    resolve_config(preset, num_frames=frames)
                except ValueError as error:
                    raise ValueError(f"num_frames (--num_frames): {error}") from None

    def cells(self) -> list[dict]:
        """One dict of AVDConfig overrides (plus "preset") per cell, num_frames resolved."""
        cells = []
        for preset, frames, lam, rec, gen in itertools.product(
                self.presets, self.num_frames, self.lams, self.rec_losses, self.gen_losses):
            frames = resolve_config(preset, num_frames=frames).num_frames
            cell = {"preset": preset, "num_frames": frames, "lam": float(lam),
                    "rec_loss": rec, "gen_loss": gen}
            if cell not in cells:
                cells.append(cell)
        first = {key: getattr(self, axis)[0] for axis, key in AXES.items()}
        for changes in self.extra:
            cell = {**first, **changes}
            cell = {"preset": cell["preset"],
                    "num_frames": resolve_config(cell["preset"],
                                                 num_frames=cell["num_frames"]).num_frames,
                    "lam": float(cell["lam"]), "rec_loss": cell["rec_loss"],
                    "gen_loss": cell["gen_loss"]}
            if cell not in cells:
                cells.append(cell)
        return cells

    def architectures(self) -> list[dict]:
        """The distinct (preset, num_frames) of the cells: what an untrained E depends on."""
        seen = []
        for cell in self.cells():
            arch = {"preset": cell["preset"], "num_frames": cell["num_frames"]}
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
    """A file-system-safe name of a setting, e.g. "small_T8_lam0.95_sum_nonsaturating"."""
    parts = [setting["preset"], f"T{setting['num_frames']}"]
    if "lam" in setting:
        parts += [f"lam{setting['lam']:g}", setting["rec_loss"], setting["gen_loss"]]
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
            cell[key] = (float(value) if key == "lam"
                         else int(value) if key == "num_frames" else value)
        cells.append(cell)
    return tuple(cells)


__all__ = ["AXES", "Grid", "folder_name", "parse_cells"]
