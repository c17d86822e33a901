"""Video post-processing as the released code does it (DVIS's ``inference_video_vis`` /
``inference_video_vps`` / ``inference_video_vss``), one chunk of frames at a time.

The functions and :class:`PanopticPlan` take one video's per-query predictions:

- ``class_probs`` (Q, K+1): softmax class probabilities, possibly with the first K columns
  replaced by the elementwise maximum with the online probabilities (offline models).
- ``mask_logits`` (T, Q, h, w): low-resolution mask logits at stride 4 of the *padded* input.
- ``resized_size`` (h_r, w_r): the frame size the segmenter saw before padding.
- ``output_size`` (H, W): the original video size the outputs are returned at.

Masks are upsampled bilinearly (align_corners=False) to the padded size, cropped to the resized
size, upsampled again to the original size; VIS thresholds the logits at 0, VPS/VSS apply a sigmoid
between the crop and the second upsample. Callers pass ``FRAME_CHUNK`` frames at a time
(:class:`dvis.modeling.pipeline.VideoAnalysis`), so that memory does not grow with T x H x W for all
queries at once; the class decisions (VIS top-k, VPS kept segments) are taken once per video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

FRAME_CHUNK = 16


@dataclass
class VISResult:
    """Tracked instances of one video. N instances, T frames, original size (H, W).

    scores (N,) float, labels (N,) int64 class index 0..K-1, ids (N,) int64 query slot (track id),
    masks (N, T, H, W) bool. Sorted by descending score. A query may appear with several labels.
    """

    scores: Tensor
    labels: Tensor
    ids: Tensor
    masks: Tensor
    image_size: tuple[int, int]
    task: str = "vis"


@dataclass
class VPSResult:
    """Video panoptic segmentation of one video.

    masks (T, H, W) int32 segment ids (0 = void); segments_infos one ``{id, isthing, category_id}``
    per segment; ids the query slot of each segment.
    """

    masks: Tensor
    segments_infos: list[dict] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    task: str = "vps"


@dataclass
class VSSResult:
    """Video semantic segmentation: masks (T, H, W) int64 class index per pixel."""

    masks: Tensor
    image_size: tuple[int, int]
    task: str = "vss"


def upsample_masks(
    mask_logits: Tensor, resized_size: tuple[int, int], output_size: tuple[int, int], sigmoid: bool
) -> Tensor:
    """(N, t, h, w) low-res logits -> (N, t, H, W): pad-size resize, crop, (sigmoid), resize."""
    padded = (mask_logits.shape[-2] * 4, mask_logits.shape[-1] * 4)
    x = F.interpolate(mask_logits, size=padded, mode="bilinear", align_corners=False)
    x = x[..., : resized_size[0], : resized_size[1]]
    if sigmoid:
        x = x.sigmoid()
    return F.interpolate(x, size=tuple(output_size), mode="bilinear", align_corners=False)


def _query_major(mask_logits: Tensor, queries: Tensor) -> Tensor:
    """(t, Q, h, w) -> the selected queries' masks as (N, t, h, w) float32."""
    return mask_logits[:, queries].transpose(0, 1).float()


def vis_select(class_probs: Tensor, max_num: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``max_num`` (query, class) pairs over the flattened Q x K table of ``class_probs`` (Q, K+1).

    Returns scores (N,) descending, labels (N,) class index, queries (N,) query slot.
    """
    num_classes = class_probs.shape[1] - 1
    scores = class_probs[:, :num_classes].flatten()
    top = scores.topk(min(max_num, scores.numel()), sorted=True)
    queries = torch.div(top.indices, num_classes, rounding_mode="floor")
    return top.values, top.indices % num_classes, queries


def vis_masks(
    mask_logits: Tensor, queries: Tensor, resized_size: tuple[int, int], output_size: tuple[int, int]
) -> Tensor:
    """mask_logits (t, Q, h, w), queries (N,) -> masks (N, t, H, W) bool on the CPU (logits > 0)."""
    up = upsample_masks(_query_major(mask_logits, queries), resized_size, output_size, False)
    return (up > 0).cpu()


def vss_map(
    class_probs: Tensor, mask_logits: Tensor, resized_size: tuple[int, int], output_size: tuple[int, int]
) -> Tensor:
    """class_probs (Q, K+1), mask_logits (t, Q, h, w) -> class index per pixel (t, H, W) int64 on the
    CPU: argmax over classes of sum_q prob[q, k] * sigmoid(mask_q)."""
    probs = class_probs[:, :-1].float()  # (Q, K)
    all_queries = torch.arange(mask_logits.shape[1])
    masks = upsample_masks(_query_major(mask_logits, all_queries), resized_size, output_size, True)
    return torch.einsum("qk,qthw->kthw", probs, masks).argmax(0).cpu()


class PanopticPlan:
    """Video panoptic post-processing in passes over frame chunks (the release's ``inference_video_vps``).

    Keep queries whose best class is not background with score > ``object_mask_threshold``; the
    owner of a pixel is the argmax of score x sigmoid(mask); a segment whose owned area / mask area
    (sigmoid >= 0.5), both counted over the whole video, is below ``overlap_threshold`` is dropped;
    stuff segments of one class share an id. Use: :meth:`keep_queries`, then :meth:`add_areas`
    over all chunks, :meth:`decide`, then :meth:`paint` per chunk (with all frames as one chunk
    when they fit in memory).
    """

    def __init__(self, kept: Tensor, labels: Tensor, scores: Tensor) -> None:
        """kept (N,) query slots, labels (Q,) best class per query, scores (N, 1, 1, 1) of the kept."""
        self.kept, self.labels, self.scores = kept, labels, scores
        self.owned = torch.zeros(len(kept), dtype=torch.int64)
        self.mask_area = torch.zeros(len(kept), dtype=torch.int64)
        self.both = torch.zeros(len(kept), dtype=torch.int64)
        self.segment_of: dict[int, int] = {}
        self.segments_infos: list[dict] = []
        self.ids: list[int] = []

    @classmethod
    def keep_queries(cls, class_probs: Tensor, object_mask_threshold: float) -> "PanopticPlan":
        """class_probs (Q, K+1) -> a plan over the queries kept."""
        num_classes = class_probs.shape[1] - 1
        scores, labels = class_probs.max(-1)
        kept = ((labels != num_classes) & (scores > object_mask_threshold)).nonzero().flatten()
        return cls(kept, labels, scores[kept].float().view(-1, 1, 1, 1))

    def maps(self, mask_logits: Tensor, resized: tuple[int, int], output: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """mask_logits (t, Q, h, w) -> owner index (t, H, W), mask >= 0.5 (N, t, H, W)."""
        masks = upsample_masks(_query_major(mask_logits, self.kept), resized, output, True)
        return (self.scores * masks).argmax(0), masks >= 0.5

    def add_areas(self, mask_logits: Tensor, resized: tuple[int, int], output: tuple[int, int]) -> None:
        """Pass 1, per chunk: adds each kept query's owned, mask and intersection areas."""
        if len(self.kept) == 0:
            return
        owner, above = self.maps(mask_logits, resized, output)
        owns = owner.unsqueeze(0) == torch.arange(len(self.kept), device=owner.device).view(-1, 1, 1, 1)
        self.owned += owns.flatten(1).sum(1).cpu()
        self.mask_area += above.flatten(1).sum(1).cpu()
        self.both += (owns & above).flatten(1).sum(1).cpu()

    def decide(self, thing_classes: set[int], overlap_threshold: float) -> None:
        """After all chunks' areas: segment ids in query order (stuff classes share their first id)."""
        stuff_segment: dict[int, int] = {}
        for k in range(len(self.kept)):
            label = int(self.labels[self.kept[k]])
            if self.owned[k] == 0 or self.mask_area[k] == 0 or self.both[k] == 0:
                continue
            if self.owned[k].item() / self.mask_area[k].item() < overlap_threshold:
                continue
            is_thing = label in thing_classes
            if not is_thing and label in stuff_segment:
                self.segment_of[k] = stuff_segment[label]
                continue
            segment_id = len(self.segments_infos) + 1
            if not is_thing:
                stuff_segment[label] = segment_id
            self.segment_of[k] = segment_id
            self.segments_infos.append({"id": segment_id, "isthing": is_thing, "category_id": label})
            self.ids.append(int(self.kept[k]))

    def paint(self, mask_logits: Tensor, resized: tuple[int, int], output: tuple[int, int]) -> Tensor:
        """Pass 2, per chunk: mask_logits (t, Q, h, w) -> segment id per pixel (t, H, W) int32, 0 = void."""
        panoptic = torch.zeros((mask_logits.shape[0], *output), dtype=torch.int32)
        if not self.segment_of:
            return panoptic
        owner, above = self.maps(mask_logits, resized, output)
        for k, segment_id in self.segment_of.items():  # query order: a later query overwrites
            panoptic[((owner == k) & above[k]).cpu()] = segment_id
        return panoptic
