"""The released DVIS checkpoints (the release's ``MODEL_ZOO.md``), one per preset that has one.

Facts recorded from the public release (``zhang-tao-whu/DVIS``, ``MODEL_ZOO.md`` and its issue
tracker), not its code:

* the reported numbers: AP / AP50 / AP75 on the OVIS and YouTube-VIS validation sets (CodaLab),
  VPQ / VPQ_thing / VPQ_stuff on VIPSeg; the VIPSeg MinVIS segmenters report none;
* where the files are: the release links one shared folder (Baidu Netdisk, password ``dvis``, and
  Feishu) for all DVIS checkpoints; the VIPSeg MinVIS segmenters have their own Baidu links;
* file names: ``MODEL_ZOO.md`` names no files (only folder links). Three names are stated by the
  maintainer in the release's issues (``MinVIS_VIPSeg_R50.pth``, ``MinVIS_VIPSeg_SwinL.pth``,
  ``DVIS_offline_vipseg_swinl.pth``), one by a user (``DVIS_online_ovis_r50.pth``); the others
  are given in that same pattern, ``DVIS_{online|offline}_{dataset}_{r50|swinl}[_720p].pth``, and
  are marked ``name_confirmed=False``: check the folder's listing.
"""

from __future__ import annotations

from dataclasses import dataclass

DVIS_FOLDER = ("Baidu Netdisk https://pan.baidu.com/s/1kfSbdHTD8ve47gn-n_7xDQ (password: dvis) or Feishu "
               "https://pjxnzg3129.feishu.cn/drive/folder/VW6XfCduZlujiFdgHeCcFss4ndh")
MINVIS_VIPSEG_R50 = "Baidu Netdisk https://pan.baidu.com/s/1JJRr06zXBTX5hyDdKEQzow (password: dvis)"
MINVIS_VIPSEG_SWINL = "Baidu Netdisk https://pan.baidu.com/s/1jqHYzl-Eb-n4H0qAsVhMBg (password: dvis)"


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One row of the release's model zoo. ``metrics``: (name, value) as reported, in percent."""

    preset: str
    file: str
    name_confirmed: bool  # the file name is stated in the release's issues (else: the same pattern)
    metrics: tuple[tuple[str, float], ...]
    download: str

    @property
    def headline(self) -> str:
        """The main reported number, e.g. ``"AP 33.7"``; ``"not reported"`` when there is none."""
        return f"{self.metrics[0][0]} {self.metrics[0][1]:.1f}" if self.metrics else "not reported"


def _vis(preset: str, file: str, ap: float, ap50: float, ap75: float, confirmed: bool = False) -> ReleasedCheckpoint:
    return ReleasedCheckpoint(preset, file, confirmed, (("AP", ap), ("AP50", ap50), ("AP75", ap75)), DVIS_FOLDER)


def _vps(preset: str, file: str, vpq: float, thing: float, stuff: float, confirmed: bool = False) -> ReleasedCheckpoint:
    return ReleasedCheckpoint(preset, file, confirmed, (("VPQ", vpq), ("VPQ_thing", thing), ("VPQ_stuff", stuff)),
                              DVIS_FOLDER)


RELEASED: tuple[ReleasedCheckpoint, ...] = (
    # OVIS (validation set, CodaLab)
    _vis("dvis-online-ovis-r50", "DVIS_online_ovis_r50.pth", 30.4, 54.9, 29.7, confirmed=True),
    _vis("dvis-online-ovis-r50-720p", "DVIS_online_ovis_r50_720p.pth", 30.9, 55.2, 30.8),
    _vis("dvis-online-ovis-swinl", "DVIS_online_ovis_swinl.pth", 46.0, 70.7, 48.6),
    _vis("dvis-online-ovis-swinl-720p", "DVIS_online_ovis_swinl_720p.pth", 47.6, 72.5, 50.1),
    _vis("dvis-offline-ovis-r50", "DVIS_offline_ovis_r50.pth", 33.7, 59.6, 33.7),
    _vis("dvis-offline-ovis-r50-720p", "DVIS_offline_ovis_r50_720p.pth", 34.6, 60.1, 33.3),
    _vis("dvis-offline-ovis-swinl", "DVIS_offline_ovis_swinl.pth", 48.8, 74.8, 50.7),
    _vis("dvis-offline-ovis-swinl-720p", "DVIS_offline_ovis_swinl_720p.pth", 50.0, 75.6, 52.9),
    # YouTube-VIS 2019
    _vis("dvis-online-ytvis19-r50", "DVIS_online_ytvis19_r50.pth", 51.0, 72.8, 56.8),
    _vis("dvis-online-ytvis19-swinl", "DVIS_online_ytvis19_swinl.pth", 63.7, 86.5, 70.0),
    _vis("dvis-offline-ytvis19-r50", "DVIS_offline_ytvis19_r50.pth", 52.1, 76.3, 57.5),
    _vis("dvis-offline-ytvis19-swinl", "DVIS_offline_ytvis19_swinl.pth", 64.8, 88.2, 72.6),
    # YouTube-VIS 2021
    _vis("dvis-online-ytvis21-r50", "DVIS_online_ytvis21_r50.pth", 46.3, 68.2, 50.6),
    _vis("dvis-online-ytvis21-swinl", "DVIS_online_ytvis21_swinl.pth", 58.6, 80.8, 64.6),
    _vis("dvis-offline-ytvis21-r50", "DVIS_offline_ytvis21_r50.pth", 47.3, 70.6, 51.7),
    _vis("dvis-offline-ytvis21-swinl", "DVIS_offline_ytvis21_swinl.pth", 60.0, 82.6, 68.4),
    # VIPSeg (video panoptic; the MinVIS rows are the fine-tuned segmenters the DVIS stages start from)
    ReleasedCheckpoint("minvis-vipseg-r50-720p", "MinVIS_VIPSeg_R50.pth", True, (), MINVIS_VIPSEG_R50),
    ReleasedCheckpoint("minvis-vipseg-swinl", "MinVIS_VIPSeg_SwinL.pth", True, (), MINVIS_VIPSEG_SWINL),
    _vps("dvis-online-vipseg-swinl", "DVIS_online_vipseg_swinl.pth", 54.7, 54.8, 54.6),
    _vps("dvis-offline-vipseg-swinl", "DVIS_offline_vipseg_swinl.pth", 57.6, 59.9, 55.5, confirmed=True),
)

BY_PRESET: dict[str, ReleasedCheckpoint] = {c.preset: c for c in RELEASED}
