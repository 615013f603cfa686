"""Tiny random vision models of each supported family, saved with save_pretrained."""

from __future__ import annotations

from pathlib import Path

import torch

SIDE = 32
TEXT = dict(
    vocab_size=99,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=16,
)
VISION = dict(
    image_size=SIDE,
    patch_size=8,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=1,
    num_attention_heads=2,
)


def _clip():
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=16)
    proc = CLIPImageProcessor(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    )
    return CLIPModel(cfg), proc


def _siglip():
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    cfg = SiglipConfig(text_config=TEXT, vision_config=VISION)
    return SiglipModel(cfg), SiglipImageProcessor(size={"height": SIDE, "width": SIDE})


def _siglip2():
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    vision = {k: v for k, v in VISION.items() if k != "image_size"} | {"num_patches": 16}
    cfg = Siglip2Config(text_config=TEXT, vision_config=vision)
    return Siglip2Model(cfg), Siglip2ImageProcessor(patch_size=8, max_num_patches=16)


def _deit():
    from transformers import DeiTConfig, DeiTModel, ViTImageProcessor

    model = DeiTModel(DeiTConfig(**VISION), add_pooling_layer=False)
    return model, ViTImageProcessor(size={"height": SIDE, "width": SIDE})


def _dinov3():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel, ViTImageProcessor

    cfg = DINOv3ViTConfig(**VISION, num_register_tokens=0)
    return DINOv3ViTModel(cfg), ViTImageProcessor(size={"height": SIDE, "width": SIDE})


def _dinov2():
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    cfg = Dinov2Config(**VISION)
    proc = BitImageProcessor(
        size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}
    )
    return Dinov2Model(cfg), proc


def _vit():
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    # Like a classification checkpoint: no tanh pooler.
    model = ViTModel(ViTConfig(**VISION), add_pooling_layer=False)
    return model, ViTImageProcessor(size={"height": SIDE, "width": SIDE})


def _convnext():
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    cfg = ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], image_size=SIDE)
    return ConvNextModel(cfg), ConvNextImageProcessor(size={"shortest_edge": SIDE})


def _swin():
    from transformers import SwinConfig, SwinModel, ViTImageProcessor

    cfg = SwinConfig(
        image_size=SIDE, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
    )
    return SwinModel(cfg), ViTImageProcessor(size={"height": SIDE, "width": SIDE})


def _resnet():
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    return ResNetModel(cfg), ConvNextImageProcessor(size={"shortest_edge": SIDE})


FAMILIES = {
    "clip": _clip,
    "siglip": _siglip,
    "siglip2": _siglip2,
    "dinov2": _dinov2,
    "dinov3": _dinov3,
    "vit": _vit,
    "deit": _deit,
    "convnext": _convnext,
    "swin": _swin,
    "resnet": _resnet,
}


def save_tiny(family: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model, processor = FAMILIES[family]()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def direct_embedding(family: str, folder: Path, image, pooling: str | None = None):
    """What a user would write by hand with transformers for one RGB image."""
    from transformers import AutoImageProcessor, AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    inputs = AutoImageProcessor.from_pretrained(folder)(images=[image], return_tensors="pt")
    with torch.no_grad():
        if pooling == "mean":
            out = model(**inputs).last_hidden_state.mean(1)
        elif family in ("clip", "siglip", "siglip2"):
            out = model.get_image_features(**inputs).pooler_output
        elif family in ("vit", "deit"):
            out = model(**inputs).last_hidden_state[:, 0]
        else:
            out = model(**inputs).pooler_output.flatten(1)
    return torch.nn.functional.normalize(out, dim=-1)[0].numpy()
