"""Per-frame segmenter of DVIS: transformers' Mask2Former, configured like the release.

The segmenter runs every frame as its own batch element (frames never interact) and yields, per
frame, Q instance queries (the decoder output *after* the decoder LayerNorm), stride-4 mask
features, class logits (K+1, last = no-object) and mask logits.

Facts this adapter relies on (checked by ``tests/test_segmenter.py`` against the release's goldens):

- Network: ``Mask2FormerForUniversalSegmentation`` built from a config only (no download), with a
  transformers ``ResNetBackbone`` (bottleneck, stride on the 3x3 conv unless ``STRIDE_IN_1X1``) or
  ``SwinBackbone``. ``SwinBackbone`` always pads each stage to window multiples and keeps the
  shift on odd blocks even when a stage is smaller than the window, as the release's Swin does.
- ``DEC_LAYERS`` counts the prediction made on the learnable queries: DEC_LAYERS 10 means 9
  masked-attention layers and 9 auxiliary predictions. transformers' ``decoder_layers`` has the
  same meaning.
- ``transformer_decoder_last_hidden_state`` is taken *before* the decoder LayerNorm; the release's
  ``pred_embds`` are after it, so :meth:`Mask2FormerSegmenter.forward` applies
  ``transformer_module.decoder.layernorm`` itself.
- FrozenBN of the release becomes ``nn.BatchNorm2d`` (eps 1e-5). Those modules are frozen: their
  parameters do not require gradients and :meth:`Mask2FormerSegmenter.train` keeps them in eval
  mode, so their statistics never change. They are not counted by :meth:`num_parameters`
  (the release stores them as buffers).
- ``SwinModel.layernorm`` (after the last stage) has no counterpart in the release and its output
  is unused by ``SwinBackbone``; it is replaced by ``nn.Identity``.
- Preprocessing (:meth:`Mask2FormerSegmenter.preprocess`): RGB 0..255, ``(x - mean) / std`` per
  channel, then zero padding at the bottom/right to a multiple of ``size_divisibility`` *after*
  normalisation (padding = the mean colour). transformers' image processor differs (0..1 scale,
  resize to 800, rounds the size up instead of padding) and is not used.
- No padding mask is used anywhere, as in the release.

Weight conversion from the release's detectron2 names lives in :mod:`dvis.compat.official`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from dvis.errors import ConfigError, InputError
from dvis.modeling.fast_path import (
    PRECISIONS,
    bf16_fast_path,
    check_precision,
    install_fast_attention,
    to_channels_last,
)

RESNET_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
NETWORK_STRIDE = 32  # coarsest backbone stride; forward() needs H, W multiples of it
_STAGES = ["stage1", "stage2", "stage3", "stage4"]


@dataclass
class SegmenterConfig:
    """Everything needed to build the segmenter offline. Defaults are the release's R50 OVIS values.

    Field names follow the release's config keys (``MASK_FORMER.*``, ``SEM_SEG_HEAD.*``,
    ``RESNETS.*`` -> ``resnet_*``, ``SWIN.*`` -> ``swin_*``).
    """

    backbone: str  # "resnet" or "swin"
    num_classes: int  # K; the no-object column is added on top
    hidden_dim: int = 256  # MASK_FORMER.HIDDEN_DIM
    mask_dim: int = 256  # SEM_SEG_HEAD.MASK_DIM
    convs_dim: int = 256  # SEM_SEG_HEAD.CONVS_DIM
    num_heads: int = 8  # MASK_FORMER.NHEADS (decoder and deformable encoder)
    dim_feedforward: int = 2048  # MASK_FORMER.DIM_FEEDFORWARD
    dec_layers: int = 10  # MASK_FORMER.DEC_LAYERS (counts the prediction on learnable queries)
    num_queries: int = 100  # MASK_FORMER.NUM_OBJECT_QUERIES
    enc_layers: int = 6  # SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS (deformable encoder)
    enc_dim_feedforward: int = 1024  # hard-coded in the release's pixel decoder
    enforce_input_proj: bool = False  # MASK_FORMER.ENFORCE_INPUT_PROJ
    # ResNet (RESNETS.*)
    resnet_depth: int = 50
    resnet_stem_out_channels: int = 64
    resnet_res2_out_channels: int = 256
    resnet_num_groups: int = 1
    resnet_width_per_group: int = 64
    resnet_stride_in_1x1: bool = False
    # Swin (SWIN.*); defaults are Swin-L
    swin_embed_dim: int = 192
    swin_depths: tuple[int, ...] = (2, 2, 18, 2)
    swin_num_heads: tuple[int, ...] = (6, 12, 24, 48)
    swin_window_size: int = 12
    swin_patch_size: int = 4
    swin_mlp_ratio: float = 4.0
    swin_qkv_bias: bool = True
    swin_ape: bool = False
    swin_patch_norm: bool = True
    swin_pretrain_img_size: int = 384
    swin_drop_path_rate: float = 0.3
    # input
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 32

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values the transformers network cannot represent."""
        if self.backbone not in ("resnet", "swin"):
            raise ConfigError(f"backbone: expected 'resnet' or 'swin', got {self.backbone!r}")
        for name in ("num_classes", "hidden_dim", "mask_dim", "convs_dim", "num_heads",
                     "dim_feedforward", "num_queries", "enc_layers", "enc_dim_feedforward", "dec_layers"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.hidden_dim % self.num_heads or self.convs_dim % self.num_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} must divide hidden_dim={self.hidden_dim} "
                f"and convs_dim={self.convs_dim}")
        if self.convs_dim % 32:
            raise ConfigError(f"convs_dim={self.convs_dim}: GroupNorm(32) needs a multiple of 32")
        if self.size_divisibility < 1 or self.size_divisibility % NETWORK_STRIDE:
            raise ConfigError(
                f"size_divisibility={self.size_divisibility}: expected a positive multiple of "
                f"{NETWORK_STRIDE} (the backbone's coarsest stride)")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ConfigError("pixel_mean/pixel_std: expected 3 values (RGB)")
        if self.backbone == "resnet":
            self._validate_resnet()
        else:
            self._validate_swin()

    def _validate_resnet(self) -> None:
        if self.resnet_depth not in RESNET_DEPTHS:
            raise ConfigError(
                f"resnet_depth={self.resnet_depth}: only bottleneck ResNets {sorted(RESNET_DEPTHS)} are supported")
        if self.resnet_num_groups != 1:
            raise ConfigError(f"resnet_num_groups={self.resnet_num_groups}: transformers' ResNet has no groups; "
                              "expected 1")
        if self.resnet_width_per_group * 4 != self.resnet_res2_out_channels:
            raise ConfigError(
                f"resnet_width_per_group={self.resnet_width_per_group} with resnet_res2_out_channels="
                f"{self.resnet_res2_out_channels}: transformers' bottleneck width is out_channels/4, so "
                f"resnet_width_per_group must be {self.resnet_res2_out_channels // 4}")

    def _validate_swin(self) -> None:
        if len(self.swin_depths) != 4 or len(self.swin_num_heads) != 4:
            raise ConfigError(f"swin_depths/swin_num_heads: expected 4 stages, got {self.swin_depths} / "
                              f"{self.swin_num_heads}")
        if self.swin_ape:
            raise ConfigError("swin_ape=True (absolute position embedding) is not supported; expected False")
        if not self.swin_patch_norm:
            raise ConfigError("swin_patch_norm=False is not supported (transformers' Swin always normalises patches)")
        if self.swin_patch_size * 8 != NETWORK_STRIDE:
            raise ConfigError(f"swin_patch_size={self.swin_patch_size}: expected 4 (strides 4..32)")
        if self.swin_window_size < 1:
            raise ConfigError(f"swin_window_size={self.swin_window_size}: expected a positive integer")
        for stage, heads in enumerate(self.swin_num_heads):
            width = self.swin_embed_dim * 2**stage
            if heads < 1 or width % heads:
                raise ConfigError(f"swin_num_heads[{stage}]={heads} must divide the stage width {width}")

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def preset(cls, name: str, num_classes: int) -> SegmenterConfig:
        """Release defaults of the OVIS configs: ``"r50"`` (100 queries) or ``"swin-l"`` (200 queries)."""
        if name == "r50":
            return cls(backbone="resnet", num_classes=num_classes)
        if name == "swin-l":
            return cls(backbone="swin", num_classes=num_classes, num_queries=200)
        raise ConfigError(f"segmenter preset {name!r}: expected 'r50' or 'swin-l'")

    # ----------------------------------------------------------------------------- transformers
    def to_transformers(self):  # -> Mask2FormerConfig
        """The equivalent ``transformers.Mask2FormerConfig`` (with its backbone config)."""
        from transformers import Mask2FormerConfig

        return Mask2FormerConfig(
            backbone_config=self._backbone_config(),
            num_labels=self.num_classes,
            feature_size=self.convs_dim,
            mask_feature_size=self.mask_dim,
            hidden_dim=self.hidden_dim,
            encoder_feedforward_dim=self.enc_dim_feedforward,
            encoder_layers=self.enc_layers,
            decoder_layers=self.dec_layers,
            num_attention_heads=self.num_heads,
            dim_feedforward=self.dim_feedforward,
            dropout=0.0,
            pre_norm=False,
            enforce_input_projection=self.enforce_input_proj,
            common_stride=4,
            num_queries=self.num_queries,
            feature_strides=[4, 8, 16, 32],
            output_auxiliary_logits=False,
        )

    def _backbone_config(self):
        if self.backbone == "resnet":
            from transformers import ResNetConfig

            return ResNetConfig(
                embedding_size=self.resnet_stem_out_channels,
                hidden_sizes=[self.resnet_res2_out_channels * 2**i for i in range(4)],
                depths=list(RESNET_DEPTHS[self.resnet_depth]),
                layer_type="bottleneck",
                hidden_act="relu",
                downsample_in_first_stage=False,
                downsample_in_bottleneck=self.resnet_stride_in_1x1,
                out_features=list(_STAGES),
            )
        from transformers import SwinConfig

        return SwinConfig(
            image_size=self.swin_pretrain_img_size,
            patch_size=self.swin_patch_size,
            embed_dim=self.swin_embed_dim,
            depths=list(self.swin_depths),
            num_heads=list(self.swin_num_heads),
            window_size=self.swin_window_size,
            mlp_ratio=self.swin_mlp_ratio,
            qkv_bias=self.swin_qkv_bias,
            drop_path_rate=self.swin_drop_path_rate,
            use_absolute_embeddings=False,
            hidden_act="gelu",
            out_features=list(_STAGES),
        )


# ------------------------------------------------------------------------------------- outputs
def as_float32(out: "SegmenterOutput") -> "SegmenterOutput":
    """Every tensor of ``out`` as contiguous float32 (the fast path's outputs are bfloat16/NHWC)."""
    def cast(x: Tensor) -> Tensor:
        return x.float().contiguous()

    aux = None if out.aux_outputs is None else [{k: cast(v) for k, v in a.items()} for a in out.aux_outputs]
    return SegmenterOutput(cast(out.pred_logits), cast(out.pred_masks), cast(out.pred_embds),
                           cast(out.mask_features), aux)


@dataclass
class SegmenterOutput:
    """Per-frame outputs, frames as the batch dimension (T)."""

    pred_logits: Tensor  # (T, Q, K+1) last decoder layer class logits
    pred_masks: Tensor  # (T, Q, H/4, W/4) last layer mask logits (stride 4 of the padded input)
    pred_embds: Tensor  # (T, Q, C) decoder output after the final decoder LayerNorm
    mask_features: Tensor  # (T, C_mask, H/4, W/4)
    aux_outputs: list[dict[str, Tensor]] | None = field(default=None)
    # aux_outputs: DEC_LAYERS-1 dicts {"pred_logits": (T,Q,K+1), "pred_masks": (T,Q,H/4,W/4)}: the
    # prediction on the learnable queries, then after masked-attention layers 1, 2, ...


@runtime_checkable
class Segmenter(Protocol):
    """What DVIS needs from a per-frame segmenter (any image model can be adapted to it).

    ``preprocess(frames_uint8 (T, 3, h, w)) -> (pixel_values (T, 3, H, W), (h, w))`` normalises and
    pads; ``forward(pixel_values, return_aux=False) -> SegmenterOutput`` runs every frame
    independently. ``Mask2FormerSegmenter`` is the implementation used for released checkpoints.
    """

    def preprocess(self, frames_uint8: Tensor) -> tuple[Tensor, tuple[int, int]]: ...

    def __call__(self, pixel_values: Tensor, return_aux: bool = False) -> SegmenterOutput: ...


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' 'backbone not in backbones_supported' warning while building."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class Mask2FormerSegmenter(nn.Module):
    """transformers' ``Mask2FormerForUniversalSegmentation`` with the release's conventions.

    State-dict keys start with ``mask2former.`` (the wrapped transformers model); released weights
    are converted by :mod:`dvis.compat.official` (``load_official_segmenter``).
    """

    def __init__(self, config: SegmenterConfig, precision: str = "fp32") -> None:
        super().__init__()
        from transformers import Mask2FormerForUniversalSegmentation

        self.config = config
        self.precision = precision
        with _quiet_transformers():
            self.mask2former = Mask2FormerForUniversalSegmentation(config.to_transformers())
        install_fast_attention(self.mask2former)
        if config.backbone == "swin":
            # unused by SwinBackbone's outputs and absent from the release
            self.backbone.swin.layernorm = nn.Identity()
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)
        for bn in self._frozen_batchnorms():
            bn.requires_grad_(False)
        self.train(self.training)

    # --------------------------------------------------------------------------------- precision
    @property
    def precision(self) -> str:
        """``"fp32"`` (transformers' network as built, the default) or ``"bf16"`` (the fast path of
        :mod:`dvis.modeling.fast_path`); outputs are float32 either way."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        try:
            self._precision = check_precision(value, "segmenter precision")
        except ValueError as err:
            raise InputError(str(err)) from None

    @property
    def compiled(self) -> bool:
        """Whether forward passes run transformers' network through ``torch.compile`` (inductor).
        The first call of each input shape compiles (tens of seconds on a CPU); it pays off on long
        videos (docs/model.md). Works with either precision; the weights stay shared and the
        state dict unchanged."""
        return self.__dict__.get("_compiled_network") is not None

    @compiled.setter
    def compiled(self, enabled: bool) -> None:
        network = torch.compile(self.mask2former) if enabled else None
        self.__dict__["_compiled_network"] = network  # not a submodule: no second set of state-dict keys

    def _network(self) -> nn.Module:
        compiled = self.__dict__.get("_compiled_network")
        return self.mask2former if compiled is None else compiled

    # --------------------------------------------------------------------------------- structure
    @property
    def backbone(self) -> nn.Module:
        return self.mask2former.model.pixel_level_module.encoder

    @property
    def decoder_norm(self) -> nn.LayerNorm:
        """The decoder LayerNorm applied before the heads and to ``pred_embds``."""
        return self.mask2former.model.transformer_module.decoder.layernorm

    def _frozen_batchnorms(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True) -> Mask2FormerSegmenter:
        """As ``nn.Module.train`` but the backbone's BatchNorms (the release's FrozenBN) stay in eval."""
        super().train(mode)
        for bn in self._frozen_batchnorms():
            bn.eval()
        return self

    def num_parameters(self) -> int:
        """Parameters as the release counts them: all except the frozen BatchNorms' affine ones."""
        frozen = {id(p) for bn in self._frozen_batchnorms() for p in bn.parameters(recurse=False)}
        return sum(p.numel() for p in self.parameters() if id(p) not in frozen)

    # ------------------------------------------------------------------------------------ inputs
    def preprocess(self, frames_uint8: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(T, 3, h, w) RGB 0..255 (uint8 or float, already resized) -> (pixel_values, (h, w)).

        ``pixel_values`` is (T, 3, H, W) float32: normalised, then zero-padded at the bottom/right to
        H, W = multiples of ``size_divisibility`` (padding after normalisation, as the release).
        """
        if not isinstance(frames_uint8, Tensor) or frames_uint8.dim() != 4 or frames_uint8.shape[1] != 3:
            shape = tuple(frames_uint8.shape) if isinstance(frames_uint8, Tensor) else type(frames_uint8).__name__
            raise InputError(f"segmenter frames: expected a (T, 3, h, w) RGB tensor, got shape {shape}")
        if frames_uint8.dtype != torch.uint8 and not frames_uint8.is_floating_point():
            raise InputError(f"segmenter frames: expected uint8 or float RGB 0..255, got dtype {frames_uint8.dtype}")
        num_frames, _, height, width = frames_uint8.shape
        if num_frames == 0 or height == 0 or width == 0:
            raise InputError(f"segmenter frames: empty tensor of shape {tuple(frames_uint8.shape)}")
        images = (frames_uint8.to(self.pixel_mean.device, torch.float32) - self.pixel_mean) / self.pixel_std
        div = self.config.size_divisibility
        pad_h, pad_w = (-height) % div, (-width) % div
        pixel_values = nn.functional.pad(images, (0, pad_w, 0, pad_h), value=0.0)
        return pixel_values, (int(height), int(width))

    def _check_pixel_values(self, pixel_values: Tensor) -> None:
        if not isinstance(pixel_values, Tensor):
            raise InputError(f"segmenter pixel_values: expected a tensor, got {type(pixel_values).__name__}")
        shape = tuple(pixel_values.shape)
        if pixel_values.dim() != 4 or shape[1] != 3:
            raise InputError(f"segmenter pixel_values: expected shape (T, 3, H, W), got {shape}")
        if shape[0] == 0 or shape[2] % NETWORK_STRIDE or shape[3] % NETWORK_STRIDE or min(shape[2:]) == 0:
            raise InputError(
                f"segmenter pixel_values: H and W must be positive multiples of {NETWORK_STRIDE} "
                f"(pad with preprocess()), got shape {shape}")
        if not pixel_values.is_floating_point():
            raise InputError(f"segmenter pixel_values: expected a float tensor, got dtype {pixel_values.dtype}")

    # ----------------------------------------------------------------------------------- forward
    def forward(self, pixel_values: Tensor, return_aux: bool = False, precision: str | None = None) -> SegmenterOutput:
        """pixel_values (T, 3, H, W), normalised and padded (H, W multiples of 32) -> float32 outputs.

        ``precision``: ``"fp32"`` (transformers' network as built) or ``"bf16"`` (the fast path,
        :mod:`dvis.modeling.fast_path`); None: :attr:`precision`.
        """
        self._check_pixel_values(pixel_values)
        if precision is None:
            precision = self.precision
        elif precision not in PRECISIONS:
            raise InputError(f"segmenter precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fp32":
            return self._forward(pixel_values, return_aux)
        with bf16_fast_path(pixel_values.device.type):
            out = self._forward(to_channels_last(pixel_values), return_aux)
        return as_float32(out)

    def _forward(self, pixel_values: Tensor, return_aux: bool) -> SegmenterOutput:
        out = self._network()(pixel_values=pixel_values, output_auxiliary_logits=return_aux, return_dict=True)
        aux = None
        if return_aux:
            aux = [{"pred_logits": a["class_queries_logits"], "pred_masks": a["masks_queries_logits"]}
                   for a in out.auxiliary_logits]
        return SegmenterOutput(
            pred_logits=out.class_queries_logits,
            pred_masks=out.masks_queries_logits,
            pred_embds=self.decoder_norm(out.transformer_decoder_last_hidden_state),
            mask_features=out.pixel_decoder_last_hidden_state,
            aux_outputs=aux,
        )
