import numpy as np
import pytest
import torch

from mirage.camera import intrinsics_from_fov
from mirage.perception.exclusion import (
    OpenVocabularySegmenter,
    exclusion_mask,
    inconsistency_mask,
    invalid_depth_mask,
    memory_inconsistency_mask,
)
from mirage.memory import LatentSpatialMemory

H, W = 32, 48


def test_invalid_depth_mask_flags_sky_and_range():
    depth = torch.full((4, 4), 2.0)
    depth[0, 0] = float("inf")   # sky
    depth[0, 1] = float("nan")
    depth[0, 2] = 0.0
    depth[0, 3] = -1.0
    depth[1, 0] = 50.0           # beyond range
    mask = invalid_depth_mask(depth, max_depth=20.0)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, :] = True
    expected[1, 0] = True
    assert torch.equal(mask, expected)
    assert not invalid_depth_mask(depth)[1, 0]
    with pytest.raises(ValueError):
        invalid_depth_mask(depth, max_depth=0.0)


def _wall_with_object():
    wall = torch.full((H, W), 4.0)
    scene = wall.clone()
    scene[16:32, 16:32] = 1.5    # an object in front of the wall filling latent cell (1, 1)
    scene[0:5, 0:5] = 3.0        # a small bump: too little of its cell to move the cell's median
    return wall, scene


def test_inconsistency_flags_object_in_front_of_wall():
    wall, scene = _wall_with_object()
    coarse_wall = torch.full((2, 3), 4.0)
    # Reference on the latent grid: the object's cell is flagged, nothing else.
    flagged = inconsistency_mask(scene, coarse_wall)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[16:32, 16:32] = True
    assert torch.equal(flagged, expected)
    # Reference at pixel resolution: every pixel in front, the bump included.
    assert torch.equal(inconsistency_mask(scene, wall), scene < 4.0)
    # Things behind the stored surface (revealed, or gone) are not flagged; nor is small noise.
    assert not inconsistency_mask(wall * 1.5, wall).any()
    assert not inconsistency_mask(wall * 0.95, wall, relative_threshold=0.1).any()
    # Where the reference holds nothing, nothing can be inconsistent.
    assert not inconsistency_mask(scene, torch.zeros(2, 3)).any()
    assert not inconsistency_mask(scene, coarse_wall, torch.zeros(2, 3, dtype=torch.bool)).any()
    with pytest.raises(ValueError):
        inconsistency_mask(scene, coarse_wall, relative_threshold=1.5)


def test_memory_inconsistency_against_stored_wall():
    K = intrinsics_from_fov(70, H, W)
    c2w = torch.eye(4)
    wall, scene = _wall_with_object()
    memory = LatentSpatialMemory(channels=4, voxel_size=None)
    memory.insert(torch.randn(4, 2, 3), wall, K, c2w)
    flagged = memory_inconsistency_mask(memory, scene, K, c2w)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[16:32, 16:32] = True
    assert torch.equal(flagged, expected)
    batched = memory_inconsistency_mask(memory, torch.stack([scene, wall]), K, c2w[None].repeat(2, 1, 1))
    assert torch.equal(batched[0], flagged) and not batched[1].any()


def test_exclusion_mask_is_the_union():
    K = intrinsics_from_fov(70, H, W)
    c2w = torch.eye(4)
    wall, scene = _wall_with_object()
    scene[0, 47] = float("inf")
    given = torch.zeros(H, W, dtype=torch.bool)
    given[-1, -1] = True
    memory = LatentSpatialMemory(channels=4, voxel_size=None)
    memory.insert(torch.randn(4, 2, 3), wall, K, c2w)
    mask = exclusion_mask(scene, given=given, memory=memory, intrinsics=K, cam_to_world=c2w)
    assert mask[0, 47] and mask[-1, -1] and mask[16:32, 16:32].all()
    assert int(mask.sum()) == 1 + 1 + 16 * 16
    assert not exclusion_mask(wall).any()
    with pytest.raises(ValueError, match="intrinsics"):
        exclusion_mask(scene, memory=memory)
    with pytest.raises(ValueError, match="given"):
        exclusion_mask(scene, given=given[:4])
    seg = exclusion_mask(wall, frames=torch.rand(3, H, W), segmenter=lambda f: torch.ones(f.shape[0], H, W,
                                                                                            dtype=torch.bool))
    assert seg.all()
    with pytest.raises(ValueError, match="frames"):
        exclusion_mask(wall, segmenter=lambda f: None)


def test_segmenter_missing_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="detector"):
        OpenVocabularySegmenter.from_pretrained(str(tmp_path / "no-dino"), str(tmp_path / "no-sam"))
    (tmp_path / "dino").mkdir()
    with pytest.raises(FileNotFoundError, match="segmenter checkpoint"):
        OpenVocabularySegmenter.from_pretrained(str(tmp_path / "dino"), str(tmp_path / "no-sam"))
    with pytest.raises(FileNotFoundError, match="could not load"):
        OpenVocabularySegmenter.from_pretrained(str(tmp_path / "dino"), str(tmp_path / "dino"))


def _tiny_sam2():
    from transformers import (Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2Model,
                              Sam2PromptEncoderConfig, Sam2VisionConfig)

    torch.manual_seed(0)
    hiera = Sam2HieraDetConfig(hidden_size=8, num_attention_heads=1, image_size=[64, 64], blocks_per_stage=[1, 1, 2, 1],
                               embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                               window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
                               window_positional_embedding_background_size=[2, 2])
    vision = Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8],
                              backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]], fpn_hidden_size=16)
    config = Sam2Config(vision_config=vision,
                        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=16, image_size=64, patch_size=16,
                                                                      mask_input_channels=4),
                        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=16, mlp_dim=32, num_attention_heads=2,
                                                                  iou_head_hidden_dim=16))
    return Sam2Model(config)


class _Detector(torch.nn.Module):
    """Follows the transformers zero-shot detection API: one box on bright frames, none on dark ones."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, **inputs):
        return inputs


class _DetectorProcessor:
    def __call__(self, images, text, return_tensors):
        assert text == "person. sky." and images.shape == (H, W, 3) and images.dtype == np.uint8
        return _Batch(input_ids=torch.zeros(1, 3, dtype=torch.long), marker=torch.tensor([float(images.mean())]))

    def post_process_grounded_object_detection(self, outputs, input_ids, threshold, text_threshold, target_sizes):
        assert target_sizes == [(H, W)]
        boxes = torch.tensor([[4.0, 2.0, 40.0, 30.0]]) if outputs["marker"].item() > 127 else torch.zeros(0, 4)
        return [{"boxes": boxes}]


def test_segmenter_boxes_to_masks_with_a_tiny_sam2(monkeypatch):
    sam = _tiny_sam2()
    seg = OpenVocabularySegmenter(_Detector(), _DetectorProcessor(), sam, labels=("person", "sky"),
                                  segmenter_input_size=64)
    seen = {}
    forward = sam.forward

    def spy(**kw):
        seen.update(kw)
        return forward(**kw)

    monkeypatch.setattr(sam, "forward", spy)
    frames = torch.stack([torch.ones(3, H, W), torch.zeros(3, H, W)])
    out = seg(frames)
    assert out.shape == (2, H, W) and out.dtype == torch.bool
    assert not out[1].any()  # nothing detected, nothing segmented
    # the box went to SAM in its 64x64 input frame, scaled per axis
    assert seen["pixel_values"].shape == (1, 3, 64, 64)
    assert torch.allclose(seen["input_boxes"], torch.tensor([[[4 * 64 / W, 2 * 64 / H, 40 * 64 / W, 30 * 64 / H]]]))
    # the union of mask logits > 0, upsampled to the frame
    with torch.no_grad():
        logits = forward(pixel_values=seen["pixel_values"], input_boxes=seen["input_boxes"],
                         multimask_output=False).pred_masks
    expected = torch.nn.functional.interpolate(logits[0, :, :1], size=(H, W), mode="bilinear")[:, 0].gt(0).any(0)
    assert torch.equal(out[0], expected)
    with pytest.raises(ValueError):
        OpenVocabularySegmenter(_Detector(), _DetectorProcessor(), sam, labels=())
    with pytest.raises(ValueError, match="frames"):
        seg(torch.ones(3, H, W))


def test_segmenter_union_of_boxes():
    class BoxMasks(torch.nn.Module):
        """Stands for SAM 2: logits +1 inside each prompt box (in its input frame), -1 outside."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values, input_boxes, multimask_output):
            S = pixel_values.shape[-1]
            masks = -torch.ones(1, input_boxes.shape[1], 1, S, S)
            for i, (x0, y0, x1, y1) in enumerate(input_boxes[0].round().long().tolist()):
                masks[0, i, 0, y0:y1, x0:x1] = 1.0
            return type("Out", (), {"pred_masks": masks})()

    class TwoBoxes(_DetectorProcessor):
        def post_process_grounded_object_detection(self, *args, **kw):
            return [{"boxes": torch.tensor([[0.0, 0.0, 12.0, 8.0], [24.0, 16.0, 48.0, 32.0]])}]

    seg = OpenVocabularySegmenter(_Detector(), TwoBoxes(), BoxMasks(), labels=("person", "sky"),
                                  segmenter_input_size=H * 2)
    out = seg(torch.ones(1, 3, H, W))[0]
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[0:8, 0:12] = True
    expected[16:32, 24:48] = True
    assert torch.equal(out, expected)


class _Batch(dict):
    def to(self, device):
        return self

    def __getattr__(self, key):
        return self[key]
