"""``dvis models``: every model a name can refer to, and where its weights come from.

Rows: the registered models shipped in the package (their ``config.yaml`` is read, no weights
loaded) and the release presets (:mod:`dvis.compat.presets`), with the released checkpoint of
each preset that has one (:mod:`dvis.compat.release_zoo`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dvis.inference.registry import REGISTERED, registered_folder

# registered name -> what it was trained on
REGISTERED_DATASETS = {"synthetic-demo": "synthetic"}
COLUMNS = ("name", "task", "dataset", "backbone", "mode", "classes", "weights")


@dataclass(frozen=True)
class ModelRow:
    name: str
    task: str
    dataset: str
    backbone: str
    mode: str
    classes: int | None
    weights: str

    def cells(self) -> tuple[str, ...]:
        return (self.name, self.task, self.dataset, self.backbone, self.mode,
                "?" if self.classes is None else str(self.classes), self.weights)


def _backbone(segmenter) -> str:
    if segmenter.backbone == "swin":
        return "swin-l" if segmenter.swin_embed_dim == 192 else f"swin (embed {segmenter.swin_embed_dim})"
    narrow = "" if segmenter.resnet_width_per_group == 64 else f" (narrow: {segmenter.resnet_width_per_group}/group)"
    return f"r{segmenter.resnet_depth}{narrow}"


def registered_rows() -> list[ModelRow]:
    from dvis.modeling.io import load_config

    rows = []
    for name in sorted(REGISTERED):
        folder = registered_folder(name)
        dataset = REGISTERED_DATASETS.get(name, "?")
        if not (folder / "config.yaml").is_file():
            rows.append(ModelRow(name, "?", dataset, "?", "?", None, f"not installed (expected in {folder})"))
            continue
        config = load_config(folder / "config.yaml")
        rows.append(ModelRow(name, config.inference.task, dataset, _backbone(config.segmenter), config.inference.mode,
                             config.segmenter.num_classes, f"shipped in the package ({folder.name}/)"))
    return rows


def preset_rows() -> list[ModelRow]:
    from dvis.compat.presets import PRESETS
    from dvis.compat.release_zoo import BY_PRESET

    rows = []
    for name in sorted(PRESETS):
        preset = PRESETS[name]
        released = BY_PRESET.get(name)
        weights = (f"released: {released.file}, {released.headline} (docs/models.md)"
                   if released else "none released (train one: docs/training.md)")
        rows.append(ModelRow(name, preset.task, preset.dataset, preset.backbone, preset.mode, preset.num_classes,
                             weights))
    return rows


def model_rows() -> list[ModelRow]:
    return registered_rows() + preset_rows()


def format_table(rows: list[ModelRow]) -> str:
    cells = [COLUMNS] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1] for line in cells]
    return "\n".join(line.rstrip() for line in lines)
