"""Names of the released DVIS checkpoints (detectron2) <-> this project's modules.

All official <-> ours key mapping lives here. The segmenter part maps the release's
``backbone.*`` and ``sem_seg_head.*`` keys onto :class:`dvis.modeling.segmenter.Mask2FormerSegmenter`
(transformers' Mask2Former, keys under ``mask2former.``). Facts it encodes:

- ResNet: ``res{S}.{B}.conv{i}`` -> ``encoder.stages.{S-2}.layers.{B}.layer.{i-1}.convolution``,
  ``.norm`` -> ``.normalization``; ``shortcut`` -> ``shortcut.convolution/normalization``; the stem
  ``stem.conv1`` -> ``embedder.embedder``. FrozenBN has no ``num_batches_tracked``: it is filled with 0.
- Swin: fused ``attn.qkv`` [3C, C] rows are q, k, v -> ``q_proj``/``k_proj``/``v_proj``;
  ``attn.proj`` -> ``o_proj``; ``norm1``/``norm2`` -> ``layernorm_before``/``layernorm_after``;
  ``norm{k}`` -> ``hidden_states_norms.stage{k+1}``. ``attn.relative_position_index`` (a persistent
  int64 buffer in the release, non-persistent in transformers) is dropped after checking that it
  equals the index transformers recomputes from the window size.
- Pixel decoder: ``input_proj`` (lowest resolution first) -> ``input_projections``; the bare
  ``transformer.level_embed`` parameter -> ``level_embed``; encoder ``norm1/linear1/linear2/norm2``
  -> ``self_attn_layer_norm/fc1/fc2/final_layer_norm``; detectron2 ``adapter_1``/``layer_1`` (conv
  with child ``norm``) -> ``adapter_1.0/.1``, ``layer_1.0/.1``; ``mask_features`` -> ``mask_projection``.
- Transformer decoder: ``query_feat`` (content; legacy name ``static_query``) -> ``queries_features``,
  ``query_embed`` (positional) -> ``queries_embedder``; fused self-attention ``in_proj`` rows q, k, v
  -> ``q_proj/k_proj/v_proj``; cross-attention stays a fused ``nn.MultiheadAttention``;
  ``decoder_norm`` -> ``decoder.layernorm``; ``class_embed`` -> ``class_predictor``;
  ``mask_embed.layers.{k}`` -> ``mask_predictor.mask_embedder.{k}.0``.
- ``criterion.empty_weight`` (loss buffer) is taken when given, otherwise filled with the
  release's values (1 per class, 0.1 for no-object).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

from dvis.errors import CheckpointError

NO_OBJECT_WEIGHT = 0.1  # MASK_FORMER.NO_OBJECT_WEIGHT of the release

_M = "mask2former"
_BB = f"{_M}.model.pixel_level_module.encoder"
_SWIN = f"{_BB}.swin"
_PD = f"{_M}.model.pixel_level_module.decoder"
_TM = f"{_M}.model.transformer_module"
_DEC = f"{_TM}.decoder"
_OFF_PD = "sem_seg_head.pixel_decoder"
_OFF_PRED = "sem_seg_head.predictor"
SEGMENTER_PREFIXES = ("backbone.", "sem_seg_head.")  # the segmenter's keys in a release checkpoint
TRACKER_PREFIX, REFINER_PREFIX = "tracker.", "refiner."  # same names below as our modules
IGNORED_PREFIXES = ("criterion.",)  # loss buffers stored by the release, not weights
LEGACY_PREFIXES = {"offline_tracker.": REFINER_PREFIX}  # older DVIS checkpoints


# --------------------------------------------------------------------------- key-name templates
_FIELD = re.compile(r"\{(\w+)(?::(w))?([+-]\d+)?\}")


class _Template:
    """A key pattern like ``backbone.res{s+2}.{b}.conv{c+1}.norm.{p:w}``.

    ``{name}`` is an integer field, ``{name+K}`` an integer written as value+K, ``{name:w}`` a word
    (no dots), ``{qkv}`` one of q/k/v. The same field values render the counterpart template.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.fields: list[tuple[str, bool, int]] = []
        pattern, pos = [], 0
        for match in _FIELD.finditer(text):
            pattern.append(re.escape(text[pos:match.start()]))
            name, is_word, offset = match.group(1), bool(match.group(2)), int(match.group(3) or 0)
            if name == "qkv":
                pattern.append(r"(?P<qkv>[qkv])")
            else:
                pattern.append(f"(?P<{name}>[A-Za-z_]+)" if is_word else f"(?P<{name}>\\d+)")
            self.fields.append((name, is_word, offset))
            pos = match.end()
        pattern.append(re.escape(text[pos:]))
        self.regex = re.compile("".join(pattern))

    def parse(self, key: str) -> dict[str, str | int] | None:
        match = self.regex.fullmatch(key)
        if match is None:
            return None
        values: dict[str, str | int] = {}
        for name, is_word, offset in self.fields:
            raw = match.group(name)
            values[name] = raw if (is_word or name == "qkv") else int(raw) - offset
        return values

    def render(self, values: dict[str, str | int]) -> str:
        def fill(match: re.Match) -> str:
            name, offset = match.group(1), int(match.group(3) or 0)
            value = values[name]
            return str(value + offset) if isinstance(value, int) else str(value)

        return _FIELD.sub(fill, self.text)


@dataclass(frozen=True)
class _Rule:
    """One official key pattern and what it becomes: ``copy``, ``split3`` (fused q,k,v) or ``check_index``."""

    official: _Template
    ours: _Template | None
    kind: str = "copy"

    def targets(self, values: dict[str, str | int]) -> list[str]:
        if self.ours is None:
            return []
        if self.kind == "split3":
            return [self.ours.render({**values, "qkv": x}) for x in "qkv"]
        return [self.ours.render(values)]


def _rule(official: str, ours: str | None, kind: str = "copy") -> _Rule:
    return _Rule(_Template(official), _Template(ours) if ours is not None else None, kind)


def _resnet_rules() -> list[_Rule]:
    stage = f"{_BB}.encoder.stages.{{s}}.layers.{{b}}"
    return [
        _rule("backbone.stem.conv1.weight", f"{_BB}.embedder.embedder.convolution.weight"),
        _rule("backbone.stem.conv1.norm.{p:w}", f"{_BB}.embedder.embedder.normalization.{{p:w}}"),
        _rule("backbone.res{s+2}.{b}.conv{c+1}.weight", f"{stage}.layer.{{c}}.convolution.weight"),
        _rule("backbone.res{s+2}.{b}.conv{c+1}.norm.{p:w}", f"{stage}.layer.{{c}}.normalization.{{p:w}}"),
        _rule("backbone.res{s+2}.{b}.shortcut.weight", f"{stage}.shortcut.convolution.weight"),
        _rule("backbone.res{s+2}.{b}.shortcut.norm.{p:w}", f"{stage}.shortcut.normalization.{{p:w}}"),
    ]


def _swin_rules() -> list[_Rule]:
    block_off = "backbone.layers.{i}.blocks.{j}"
    block = f"{_SWIN}.encoder.layers.{{i}}.blocks.{{j}}"
    return [
        _rule("backbone.patch_embed.proj.{p:w}", f"{_SWIN}.embeddings.patch_embeddings.projection.{{p:w}}"),
        _rule("backbone.patch_embed.norm.{p:w}", f"{_SWIN}.embeddings.norm.{{p:w}}"),
        _rule(f"{block_off}.norm1.{{p:w}}", f"{block}.layernorm_before.{{p:w}}"),
        _rule(f"{block_off}.norm2.{{p:w}}", f"{block}.layernorm_after.{{p:w}}"),
        _rule(f"{block_off}.attn.qkv.{{p:w}}", f"{block}.attention.{{qkv}}_proj.{{p:w}}", "split3"),
        _rule(f"{block_off}.attn.proj.{{p:w}}", f"{block}.attention.o_proj.{{p:w}}"),
        _rule(f"{block_off}.attn.relative_position_bias_table",
              f"{block}.attention.relative_position_bias.relative_position_bias_table"),
        _rule(f"{block_off}.attn.relative_position_index", None, "check_index"),
        _rule(f"{block_off}.mlp.fc{{k}}.{{p:w}}", f"{block}.mlp.fc{{k}}.{{p:w}}"),
        _rule("backbone.layers.{i}.downsample.reduction.weight", f"{_SWIN}.encoder.layers.{{i}}.downsample.reduction.weight"),
        _rule("backbone.layers.{i}.downsample.norm.{p:w}", f"{_SWIN}.encoder.layers.{{i}}.downsample.norm.{{p:w}}"),
        _rule("backbone.norm{k}.{p:w}", f"{_BB}.hidden_states_norms.stage{{k+1}}.{{p:w}}"),
    ]


def _pixel_decoder_rules() -> list[_Rule]:
    enc_off = f"{_OFF_PD}.transformer.encoder.layers.{{n}}"
    enc = f"{_PD}.encoder.layers.{{n}}"
    return [
        _rule(f"{_OFF_PD}.input_proj.{{l}}.{{m}}.{{p:w}}", f"{_PD}.input_projections.{{l}}.{{m}}.{{p:w}}"),
        _rule(f"{_OFF_PD}.transformer.level_embed", f"{_PD}.level_embed"),
        _rule(f"{enc_off}.self_attn.{{a:w}}.{{p:w}}", f"{enc}.self_attn.{{a:w}}.{{p:w}}"),
        _rule(f"{enc_off}.norm1.{{p:w}}", f"{enc}.self_attn_layer_norm.{{p:w}}"),
        _rule(f"{enc_off}.linear1.{{p:w}}", f"{enc}.fc1.{{p:w}}"),
        _rule(f"{enc_off}.linear2.{{p:w}}", f"{enc}.fc2.{{p:w}}"),
        _rule(f"{enc_off}.norm2.{{p:w}}", f"{enc}.final_layer_norm.{{p:w}}"),
        _rule(f"{_OFF_PD}.mask_features.{{p:w}}", f"{_PD}.mask_projection.{{p:w}}"),
        _rule(f"{_OFF_PD}.adapter_{{k}}.weight", f"{_PD}.adapter_{{k}}.0.weight"),
        _rule(f"{_OFF_PD}.adapter_{{k}}.norm.{{p:w}}", f"{_PD}.adapter_{{k}}.1.{{p:w}}"),
        _rule(f"{_OFF_PD}.layer_{{k}}.weight", f"{_PD}.layer_{{k}}.0.weight"),
        _rule(f"{_OFF_PD}.layer_{{k}}.norm.{{p:w}}", f"{_PD}.layer_{{k}}.1.{{p:w}}"),
    ]


def _predictor_rules() -> list[_Rule]:
    self_off = f"{_OFF_PRED}.transformer_self_attention_layers.{{i}}"
    cross_off = f"{_OFF_PRED}.transformer_cross_attention_layers.{{i}}"
    ffn_off = f"{_OFF_PRED}.transformer_ffn_layers.{{i}}"
    layer = f"{_DEC}.layers.{{i}}"
    return [
        _rule(f"{_OFF_PRED}.query_feat.weight", f"{_TM}.queries_features.weight"),
        _rule(f"{_OFF_PRED}.static_query.weight", f"{_TM}.queries_features.weight"),  # legacy name
        _rule(f"{_OFF_PRED}.query_embed.weight", f"{_TM}.queries_embedder.weight"),
        _rule(f"{_OFF_PRED}.level_embed.weight", f"{_TM}.level_embed.weight"),
        _rule(f"{_OFF_PRED}.input_proj.{{l}}.{{p:w}}", f"{_TM}.input_projections.{{l}}.{{p:w}}"),
        _rule(f"{self_off}.self_attn.in_proj_{{p:w}}", f"{layer}.self_attn.{{qkv}}_proj.{{p:w}}", "split3"),
        _rule(f"{self_off}.self_attn.out_proj.{{p:w}}", f"{layer}.self_attn.out_proj.{{p:w}}"),
        _rule(f"{self_off}.norm.{{p:w}}", f"{layer}.self_attn_layer_norm.{{p:w}}"),
        _rule(f"{cross_off}.multihead_attn.in_proj_{{p:w}}", f"{layer}.cross_attn.in_proj_{{p:w}}"),
        _rule(f"{cross_off}.multihead_attn.out_proj.{{p:w}}", f"{layer}.cross_attn.out_proj.{{p:w}}"),
        _rule(f"{cross_off}.norm.{{p:w}}", f"{layer}.cross_attn_layer_norm.{{p:w}}"),
        _rule(f"{ffn_off}.linear1.{{p:w}}", f"{layer}.fc1.{{p:w}}"),
        _rule(f"{ffn_off}.linear2.{{p:w}}", f"{layer}.fc2.{{p:w}}"),
        _rule(f"{ffn_off}.norm.{{p:w}}", f"{layer}.final_layer_norm.{{p:w}}"),
        _rule(f"{_OFF_PRED}.decoder_norm.{{p:w}}", f"{_DEC}.layernorm.{{p:w}}"),
        _rule(f"{_OFF_PRED}.class_embed.{{p:w}}", f"{_M}.class_predictor.{{p:w}}"),
        _rule(f"{_OFF_PRED}.mask_embed.layers.{{k}}.{{p:w}}", f"{_DEC}.mask_predictor.mask_embedder.{{k}}.0.{{p:w}}"),
        _rule("criterion.empty_weight", f"{_M}.criterion.empty_weight"),
    ]


def segmenter_rules(backbone: str) -> list[_Rule]:
    """All key rules of a segmenter with the given backbone ("resnet" or "swin")."""
    backbone_rules = _resnet_rules() if backbone == "resnet" else _swin_rules()
    return backbone_rules + _pixel_decoder_rules() + _predictor_rules()


def _find_rule(rules: Iterable[_Rule], key: str) -> tuple[_Rule, dict] | None:
    for rule in rules:
        values = rule.official.parse(key)
        if values is not None:
            return rule, values
    return None


def official_name(our_key: str, backbone: str) -> str:
    """The release's key that fills ``our_key`` (for messages); ``our_key`` itself if none."""
    for rule in segmenter_rules(backbone):
        if rule.ours is None:
            continue
        values = rule.ours.parse(our_key)
        if values is not None:
            return rule.official.render(values)
    return our_key


# ------------------------------------------------------------------------------------ converter
def _expected_entries(config) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of the segmenter's state dict, from a meta-device build (no memory)."""
    from dvis.modeling.segmenter import Mask2FormerSegmenter

    with torch.device("meta"):
        model = Mask2FormerSegmenter(config)
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def _relative_position_index(window: int) -> Tensor:
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    with torch.device("cpu"):
        return SwinRelativePositionBias(1, (window, window))._create_relative_position_index()


class KeyReport:
    """Every problem of fitting a state dict into a model, collected so that one error lists them all.

    Entries start with the checkpoint's key name (the release's names for the segmenter).
    """

    TITLES = ("missing keys", "unexpected keys", "shape mismatches", "keys filling the same weight",
              "invalid values")

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        self.mismatched: list[str] = []
        self.duplicates: list[str] = []
        self.invalid: list[str] = []
        self.claimed: set[str] = set()  # our keys whose source was found but rejected

    def _lists(self) -> tuple[list[str], ...]:
        return self.missing, self.unexpected, self.mismatched, self.duplicates, self.invalid

    def sections(self) -> list[tuple[str, list[str]]]:
        return [(title, items) for title, items in zip(self.TITLES, self._lists()) if items]

    def __bool__(self) -> bool:
        return bool(self.sections())

    def extend(self, other: KeyReport) -> None:
        for mine, theirs in zip(self._lists(), other._lists()):
            mine.extend(theirs)
        self.claimed |= other.claimed

    def listing(self, per_part: int | None = None) -> str:
        """The sections as indented lines; ``per_part`` entries at most per top-level key prefix."""
        return "".join(_section(title, items, per_part) for title, items in self.sections())

    def raise_if_any(self, variant: str) -> None:
        if self:
            raise CheckpointError(f"segmenter weights do not fit the {variant} segmenter:" + self.listing())


def _part(entry: str) -> str:
    return entry.split(".", 1)[0] + ".*"


def _section(title: str, items: list[str], per_part: int | None) -> str:
    """``title (N)`` and the entries; with ``per_part``, at most that many per key prefix and a count
    per prefix when there are several."""
    if per_part is None:
        return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items)
    groups: dict[str, list[str]] = {}
    for item in items:
        groups.setdefault(_part(item), []).append(item)
    counts = f"; by part: {', '.join(f'{p} {len(g)}' for p, g in groups.items())}" if len(groups) > 1 else ""
    lines = []
    for part, group in groups.items():
        lines += group[:per_part]
        if len(group) > per_part:
            lines.append(f"... and {len(group) - per_part} more {part} keys")
    return f"\n  {title} ({len(items)}{counts}):\n    " + "\n    ".join(lines)


def _check_index(name: str, tensor: Tensor, config, report: KeyReport) -> None:
    """The release stores Swin's relative position index; it must equal the recomputed one."""
    window = config.swin_window_size
    expected = _relative_position_index(window)
    if tuple(tensor.shape) != tuple(expected.shape):
        report.mismatched.append(f"{name}: expected {tuple(expected.shape)} (window {window}), found {tuple(tensor.shape)}")
    elif not torch.equal(tensor.to("cpu", torch.int64), expected):
        report.invalid.append(f"{name}: differs from the relative position index of window size {window}")


def _split(rule: _Rule, values: dict, name: str, tensor: Tensor, expected: dict,
           report: KeyReport) -> list[tuple[str, Tensor]]:
    """Official tensor -> [(our key, tensor)]; a fused q,k,v tensor is checked whole, then split."""
    targets = rule.targets(values)
    if rule.kind != "split3":
        return [(targets[0], tensor)]
    if targets[0] not in expected:
        report.unexpected.append(f"{name} (would be {targets[0]} etc.)")
        return []
    part_shape = expected[targets[0]][0]
    fused_shape = (3 * part_shape[0], *part_shape[1:])
    if tuple(tensor.shape) != fused_shape:
        report.mismatched.append(f"{name}: expected {fused_shape}, found {tuple(tensor.shape)}")
        report.claimed.update(target for target in targets if target in expected)
        return []
    return list(zip(targets, torch.chunk(tensor, 3, dim=0)))


def convert_segmenter_state_dict(official: dict[str, Tensor], config) -> dict[str, Tensor]:
    """Release-named segmenter weights -> state dict of ``Mask2FormerSegmenter(config)``.

    ``official`` holds ``backbone.*`` and ``sem_seg_head.*`` keys (``criterion.empty_weight`` is
    accepted too). The result loads strictly. Any missing, unexpected, duplicated or wrongly shaped
    key raises one :class:`CheckpointError` that lists them all with expected and found shapes.
    """
    converted, report = check_segmenter_state_dict(official, config)
    report.raise_if_any(backbone_name(config))
    return converted


def load_official_segmenter(model, official: dict[str, Tensor]) -> None:
    """Convert release-named weights (``backbone.*``, ``sem_seg_head.*``) and load them strictly
    into ``model`` (a :class:`~dvis.modeling.segmenter.Mask2FormerSegmenter`)."""
    model.load_state_dict(convert_segmenter_state_dict(official, model.config), strict=True)


def check_segmenter_state_dict(official: dict[str, Tensor], config) -> tuple[dict[str, Tensor], KeyReport]:
    """Like :func:`convert_segmenter_state_dict` but returns the problems instead of raising.

    The converted dict is complete only when the report is empty.
    """
    if not isinstance(official, dict):
        raise CheckpointError(f"segmenter weights: expected a dict of tensors, got {type(official).__name__}")
    expected = _expected_entries(config)
    rules = segmenter_rules(config.backbone)
    report = KeyReport()
    converted: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for name, tensor in official.items():
        if not isinstance(tensor, Tensor):
            report.invalid.append(f"{name}: expected a tensor, found {type(tensor).__name__}")
            continue
        found = _find_rule(rules, name)
        if found is None:
            report.unexpected.append(name)
            continue
        rule, values = found
        if rule.kind == "check_index":
            _check_index(name, tensor, config, report)
            continue
        for key, value in _split(rule, values, name, tensor, expected, report):
            _place(key, value, name, expected, converted, sources, report)
    _fill_defaults(expected, converted)
    report.missing = [official_name(key, config.backbone) for key in expected
                      if key not in converted and key not in report.claimed]
    return converted, report


def _place(key: str, value: Tensor, name: str, expected: dict, converted: dict,
           sources: dict, report: KeyReport) -> None:
    """Put one converted tensor under our key after checking key, shape and uniqueness."""
    if key not in expected:
        report.unexpected.append(f"{name} (would be {key})")
        return
    shape, dtype = expected[key]
    if tuple(value.shape) != shape:
        report.mismatched.append(f"{name}: expected {shape}, found {tuple(value.shape)}")
        report.claimed.add(key)
        return
    if key in converted:
        report.duplicates.append(f"{sources[key]} and {name} (both -> {key})")
        return
    value = value.detach()
    converted[key] = (value.to(dtype=dtype) if value.is_floating_point() else value).clone()
    sources[key] = name


def _fill_defaults(expected: dict, converted: dict) -> None:
    """Weights the release does not store: BatchNorm ``num_batches_tracked`` and the loss weights."""
    for key, (shape, dtype) in expected.items():
        if key in converted:
            continue
        if key.endswith(".num_batches_tracked"):
            converted[key] = torch.zeros(shape, dtype=dtype)
        elif key == f"{_M}.criterion.empty_weight":
            weight = torch.ones(shape, dtype=dtype)
            weight[-1] = NO_OBJECT_WEIGHT
            converted[key] = weight


_RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}  # bottleneck blocks per stage
_SWIN_NAMES = {(96, (2, 2, 6, 2)): "Swin-T", (96, (2, 2, 18, 2)): "Swin-S", (128, (2, 2, 18, 2)): "Swin-B",
               (192, (2, 2, 18, 2)): "Swin-L"}


def _swin_name(embed_dim: int | None, depths: tuple[int, ...]) -> str:
    return _SWIN_NAMES.get((embed_dim, depths)) or f"Swin (embed {embed_dim}, depths {list(depths)})"


def backbone_name(config) -> str:
    """``ResNet-50``, ``Swin-L``, ... of a :class:`SegmenterConfig` (for messages)."""
    if config.backbone == "resnet":
        return f"ResNet-{config.resnet_depth}"
    return _swin_name(config.swin_embed_dim, tuple(config.swin_depths))


def _blocks_per_stage(keys: Iterable[str], pattern: str) -> tuple[int, ...]:
    """Number of distinct block indices per stage of keys matching ``pattern`` (groups: stage, block)."""
    blocks: dict[int, set[int]] = {}
    for key in keys:
        match = re.match(pattern, key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    return tuple(len(blocks[stage]) for stage in sorted(blocks))


def backbone_name_from_keys(state: dict[str, Tensor]) -> str | None:
    """The backbone a release-named state dict holds, named as :func:`backbone_name` does; None if none."""
    if any(k.startswith("backbone.stem.") for k in state):
        stages = _blocks_per_stage(state, r"backbone\.res(\d)\.(\d+)\.conv3\.")
        depth = next((d for d, blocks in _RESNET_DEPTHS.items() if blocks == stages), None)
        return f"ResNet-{depth}" if depth else f"ResNet (bottleneck blocks per stage {list(stages)})"
    if any(k.startswith("backbone.patch_embed.") for k in state):
        weight = state.get("backbone.patch_embed.proj.weight")
        embed = int(weight.shape[0]) if weight is not None and weight.dim() > 0 else None
        return _swin_name(embed, _blocks_per_stage(state, r"backbone\.layers\.(\d+)\.blocks\.(\d+)\."))
    return None
