"""Video post-processing as the released code does it (SPEC section 5).

All functions take one video's per-query predictions:

- ``class_probs`` (Q, K+1): softmax class probabilities, possibly with the first K columns
  replaced by the elementwise maximum with the online probabilities (offline models).
- ``mask_logits`` (T, Q, h, w): low-resolution mask logits at stride 4 of the *padded* input.
- ``resized_size`` (h_r, w_r): the frame size the segmenter saw before padding.
- ``output_size`` (H, W): the original video size the outputs are returned at.

Masks are upsampled bilinearly (align_corners=False) to the padded size, cropped to the resized
size, upsampled again to the original size; VIS thresholds the logits at 0, VPS/VSS apply a sigmoid
between the crop and the second upsample. Frames are processed in chunks so that memory does not
grow with T x H x W for all queries at once.
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


def _frame_chunks(num_frames: int):
    for start in range(0, num_frames, FRAME_CHUNK):
        yield slice(start, min(start + FRAME_CHUNK, num_frames))


def _query_major(mask_logits: Tensor, queries: Tensor, frames: slice) -> Tensor:
    """(T, Q, h, w) -> selected queries' frames as (N, t, h, w) float32."""
    return mask_logits[frames][:, queries].transpose(0, 1).float()


def vis_postprocess(
    class_probs: Tensor,
    mask_logits: Tensor,
    resized_size: tuple[int, int],
    output_size: tuple[int, int],
    max_num: int,
) -> VISResult:
    """Top-``max_num`` (query, class) pairs over the flattened Q x K table, masks > 0."""
    num_queries, num_classes = class_probs.shape[0], class_probs.shape[1] - 1
    scores = class_probs[:, :num_classes].flatten()
    top = scores.topk(min(max_num, scores.numel()), sorted=True)
    queries = torch.div(top.indices, num_classes, rounding_mode="floor")
    labels = top.indices % num_classes
    frames = mask_logits.shape[0]
    masks = torch.empty((len(queries), frames, *output_size), dtype=torch.bool)
    for chunk in _frame_chunks(frames):
        up = upsample_masks(_query_major(mask_logits, queries, chunk), resized_size, output_size, False)
        masks[:, chunk] = (up > 0).cpu()
    return VISResult(top.values.cpu(), labels.cpu(), queries.cpu(), masks, tuple(output_size))


def vss_postprocess(
    class_probs: Tensor, mask_logits: Tensor, resized_size: tuple[int, int], output_size: tuple[int, int]
) -> VSSResult:
    """Per pixel argmax over classes of sum_q prob[q, k] * sigmoid(mask_q)."""
    probs = class_probs[:, :-1].float()  # (Q, K)
    all_queries = torch.arange(mask_logits.shape[1])
    frames = mask_logits.shape[0]
    semantic = torch.empty((frames, *output_size), dtype=torch.int64)
    for chunk in _frame_chunks(frames):
        masks = upsample_masks(_query_major(mask_logits, all_queries, chunk), resized_size, output_size, True)
        per_class = torch.einsum("qk,qthw->kthw", probs, masks)
        semantic[chunk] = per_class.argmax(0).cpu()
    return VSSResult(semantic, tuple(output_size))


def vps_postprocess(
    class_probs: Tensor,
    mask_logits: Tensor,
    resized_size: tuple[int, int],
    output_size: tuple[int, int],
    thing_classes: set[int],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> VPSResult:
    """Panoptic segmentation of a video; areas are counted over the whole video."""
    num_classes = class_probs.shape[1] - 1
    scores, labels = class_probs.max(-1)
    keep = (labels != num_classes) & (scores > object_mask_threshold)
    kept = keep.nonzero().flatten()
    frames = mask_logits.shape[0]
    panoptic = torch.zeros((frames, *output_size), dtype=torch.int32)
    result = VPSResult(panoptic, image_size=tuple(output_size))
    if len(kept) == 0:
        return result
    kept_scores = scores[kept].float().view(-1, 1, 1, 1)

    def chunk_maps(chunk: slice) -> tuple[Tensor, Tensor]:
        masks = upsample_masks(_query_major(mask_logits, kept, chunk), resized_size, output_size, True)
        return (kept_scores * masks).argmax(0), masks >= 0.5  # (t, H, W), (N, t, H, W)

    # Pass 1: whole-video areas of each kept query's argmax region, mask region and intersection.
    owned_area = torch.zeros(len(kept), dtype=torch.int64)
    mask_area = torch.zeros(len(kept), dtype=torch.int64)
    both_area = torch.zeros(len(kept), dtype=torch.int64)
    for chunk in _frame_chunks(frames):
        owner, above = chunk_maps(chunk)
        owns = owner.unsqueeze(0) == torch.arange(len(kept)).view(-1, 1, 1, 1)
        owned_area += owns.flatten(1).sum(1).cpu()
        mask_area += above.flatten(1).sum(1).cpu()
        both_area += (owns & above).flatten(1).sum(1).cpu()

    # Decide segment ids in query order (stuff classes merge into their first segment).
    segment_of = {}
    stuff_segment: dict[int, int] = {}
    for k in range(len(kept)):
        label = int(labels[kept[k]])
        if owned_area[k] == 0 or mask_area[k] == 0 or both_area[k] == 0:
            continue
        if owned_area[k].item() / mask_area[k].item() < overlap_threshold:
            continue
        is_thing = label in thing_classes
        if not is_thing and label in stuff_segment:
            segment_of[k] = stuff_segment[label]
            continue
        segment_id = len(result.segments_infos) + 1
        if not is_thing:
            stuff_segment[label] = segment_id
        segment_of[k] = segment_id
        result.segments_infos.append({"id": segment_id, "isthing": is_thing, "category_id": label})
        result.ids.append(int(kept[k]))

    # Pass 2: paint, in query order (a later query overwrites, as the release does).
    for chunk in _frame_chunks(frames):
        owner, above = chunk_maps(chunk)
        for k, segment_id in segment_of.items():
            panoptic[chunk][((owner == k) & above[k]).cpu()] = segment_id
    return result
