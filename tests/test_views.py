"""The box algebra (property tests) and the crop kernel against per-image references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from imgmdp_env import views as V

coord = st.floats(-1.0, 2.0, allow_nan=False, width=32)
size = st.floats(0.03125, 2.0, allow_nan=False, width=32)
box = st.tuples(coord, coord, size, size).map(lambda b: torch.tensor(b, dtype=torch.float64))


@settings(max_examples=200, deadline=None)
@given(box, box)
def test_apply_relative_inverts_relative_box(b1, b2):
    a = V.relative_box(b1, b2)
    assert torch.allclose(V.apply_relative(b1, a), b2, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(box, box, box)
def test_relative_boxes_compose(b1, b2, b3):
    # going b1 -> b2 -> b3 reaches the same box as b1 -> b3
    via = V.apply_relative(V.apply_relative(b1, V.relative_box(b1, b2)), V.relative_box(b2, b3))
    assert torch.allclose(via, b3, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(box, box)
def test_iou_symmetric_bounded_and_one_on_self(b1, b2):
    iou = V.box_iou(b1, b2)
    assert 0 <= iou <= 1
    assert torch.isclose(iou, V.box_iou(b2, b1))
    assert torch.isclose(V.box_iou(b1, b1), torch.tensor(1.0, dtype=torch.float64))


def test_iou_of_a_float32_box_with_itself_is_never_above_one():
    # float32 corners rebuilt from centre and size gave 1 + 7e-7 for 29% of boxes, which fell
    # out of the last IoU bin of the value-accuracy diagnostic
    b = V.sample_boxes(1000, scale=(0.05, 1.0), generator=torch.Generator().manual_seed(0))
    iou = V.box_iou(b, b)
    assert iou.max() <= 1.0 and iou.min() > 1 - 1e-5


def test_iou_known_values():
    a = torch.tensor([0.5, 0.5, 1.0, 1.0])
    assert V.box_iou(a, torch.tensor([1.0, 0.5, 1.0, 1.0])).item() == pytest.approx(1 / 3)
    assert V.box_iou(a, torch.tensor([3.0, 3.0, 1.0, 1.0])).item() == 0.0
    assert V.box_intersection(a, torch.tensor([1.0, 0.75, 1.0, 0.5])).item() == pytest.approx(0.25)


def test_xyxy_roundtrip():
    b = torch.rand(50, 4) + 0.1
    assert torch.allclose(V.xyxy_to_cxcywh(V.cxcywh_to_xyxy(b)), b, atol=1e-6)


def test_clamp_boxes_respects_limits_and_keeps_valid_boxes():
    b = torch.tensor([[0.5, 0.5, 0.5, 0.5], [-3.0, 4.0, 0.001, 10.0], [2.0, 0.5, 0.4, 0.4]])
    out = V.clamp_boxes(b, min_size=0.05, margin=0.25)
    assert torch.equal(out[0], b[0])
    xy = V.cxcywh_to_xyxy(out)
    assert (xy >= -0.25 - 1e-6).all() and (xy <= 1.25 + 1e-6).all()
    assert (out[:, 2:] >= 0.05).all() and (out[:, 2:] <= 1.5).all()
    assert out[2, 2:].tolist() == pytest.approx([0.4, 0.4])  # shifted, not shrunk


def test_sample_boxes_inside_image_with_scale_range():
    g = torch.Generator().manual_seed(0)
    b = V.sample_boxes(4000, scale=(0.1, 0.5), image_aspect=torch.full((4000,), 2.0), generator=g)
    xy = V.cxcywh_to_xyxy(b)
    assert (xy >= -1e-6).all() and (xy <= 1 + 1e-6).all()
    area = b[:, 2] * b[:, 3]
    assert area.max() <= 0.5 + 1e-5 and area.min() >= 0.1 * 0.5  # clipping only shrinks
    # pixel aspect (w * 2) / h stays within the ratio range for unclipped boxes
    r = b[:, 2] * 2.0 / b[:, 3]
    ok = (b[:, 2] < 1) & (b[:, 3] < 1)
    assert (r[ok] > 0.75 - 1e-4).all() and (r[ok] < 4 / 3 + 1e-4).all()
    g2 = torch.Generator().manual_seed(0)
    again = V.sample_boxes(4000, (0.1, 0.5), image_aspect=torch.full((4000,), 2.0), generator=g2)
    assert torch.equal(b, again)
    with pytest.raises(ValueError, match="scale"):
        V.sample_boxes(3, scale=(0.5, 0.1))


def test_box_tokens_bins_and_edges():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [-100.0, 100.0, 1e-9, 1e9]])
    t = V.box_tokens(a, n_bins=16)
    assert t.dtype == torch.int64 and t.shape == (2, 4)
    assert t[0].tolist() == [8, 8, 8, 8]  # the identity sits in the middle bin
    assert t[1].tolist() == [0, 15, 0, 15]
    assert (V.box_tokens(torch.randn(100, 4).exp(), 7) < 7).all()


# ------------------------------------------------------------------------------ crop kernel
def reference_crop(img: np.ndarray, box, h: int, w: int) -> np.ndarray:
    """Per-image reference: grid_sample bilinear with zero padding at pixel centres."""
    x0, y0 = box[0] - box[2] / 2, box[1] - box[3] / 2
    t = lambda n: (np.arange(n) + 0.5) / n  # noqa: E731
    gx = (x0 + box[2] * t(w)) * 2 - 1
    gy = (y0 + box[3] * t(h)) * 2 - 1
    grid = torch.tensor(np.stack(np.meshgrid(gx, gy), -1), dtype=torch.float32)[None]
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].numpy()


@pytest.fixture
def images(rng):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 56), (64, 64),
                                                                        (23, 90)]]


@pytest.mark.parametrize("torch_path", [False, True])
def test_render_matches_reference_crop(images, rng, torch_path, monkeypatch):
    if torch_path:  # the portable path (used on CUDA) must compute the same views
        monkeypatch.setattr(V, "_bilinear_u8", None)
    bank = V.ImageBank(images, levels=1)
    idx = torch.tensor(rng.integers(0, 3, 40))
    boxes = torch.tensor(np.c_[rng.uniform(-0.2, 1.2, (40, 2)), rng.uniform(0.05, 1.4, (40, 2))],
                         dtype=torch.float32)
    out = V.render_views(bank, idx, boxes, (12, 17), antialias=False)
    assert out.shape == (40, 3, 12, 17) and out.dtype == torch.uint8
    for k in range(40):
        ref = reference_crop(images[idx[k]], boxes[k].tolist(), 12, 17)
        assert np.abs(out[k].numpy().astype(float) - ref).max() <= 1.5, k


def test_full_box_at_native_size_is_the_image(images):
    bank = V.ImageBank(images)
    for i, img in enumerate(images):
        out = V.render_views(bank, torch.tensor([i]), torch.tensor([[0.5, 0.5, 1.0, 1.0]]),
                             img.shape[:2])
        assert np.array_equal(out[0].permute(1, 2, 0).numpy(), img)
        assert np.array_equal(bank.image(i), img)


def test_outside_is_filled():
    img = np.full((8, 8, 3), 200, np.uint8)
    bank = V.ImageBank([img], fill=(10, 20, 30))
    out = V.render_views(bank, torch.tensor([0]), torch.tensor([[5.0, 5.0, 1.0, 1.0]]), 4)
    assert (out[0, :, 0, 0] == torch.tensor([10, 20, 30], dtype=torch.uint8)).all()
    half = V.render_views(bank, torch.tensor([0]), torch.tensor([[1.0, 0.5, 1.0, 1.0]]), 8)
    assert (half[0, :, :, :4] == 200).all() and (half[0, 0, :, 4:] == 10).all()


def test_antialiasing_removes_moire():
    # a one-pixel checkerboard shrunk ~8.5x: bilinear aliases, the pyramid averages to grey
    img = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, -1)
    bank = V.ImageBank([img], levels=4)
    box = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    aa = V.render_views(bank, torch.tensor([0]), box, 30, antialias=True).float()
    plain = V.render_views(bank, torch.tensor([0]), box, 30, antialias=False).float()
    assert (aa - 127.5).abs().max() <= 1.0
    assert plain.std() > 25  # moire: far from the uniform grey of the true average


def test_tensor_input_and_errors(images):
    stack = torch.from_numpy(np.stack([images[1]] * 2)).permute(0, 3, 1, 2)
    out = V.render_views(stack, torch.tensor([1]), torch.tensor([[0.5, 0.5, 1.0, 1.0]]), 64)
    assert torch.equal(out[0], stack[1])
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        V.render_views(stack, torch.tensor([0]), torch.zeros(4), 8)
    with pytest.raises(TypeError, match="uint8"):
        V.ImageBank([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="at least one"):
        V.ImageBank([])


@pytest.mark.skipif(V._bilinear_u8 is None, reason="the compiled CPU kernel needs numba")
@pytest.mark.parametrize("antialias", [False, True])
def test_torch_path_gives_the_same_bytes_as_the_compiled_kernel(images, rng, antialias,
                                                                 monkeypatch):
    bank = V.ImageBank(images + [rng.integers(0, 256, (200, 150, 3), dtype=np.uint8)], levels=4)
    idx = torch.tensor(rng.integers(0, 4, 200))
    boxes = torch.tensor(np.c_[rng.uniform(-1, 2, (200, 2)), np.exp(rng.uniform(-4, 1, (200, 2)))],
                         dtype=torch.float32)
    compiled = V.render_views(bank, idx, boxes, (13, 21), antialias=antialias)
    monkeypatch.setattr(V, "_bilinear_u8", None)
    out = torch.empty_like(compiled)
    portable = V.render_views(bank.to("cpu"), idx, boxes, (13, 21), antialias=antialias, out=out)
    assert portable is out and torch.equal(portable, compiled)
