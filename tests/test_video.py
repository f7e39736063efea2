"""Optical flow and mask propagation on synthetic motion with known answers."""

import numpy as np
import pytest
import torch

from freelabel.errors import ConfigError
from freelabel.video.flow import FlowConfig, OpticalFlow
from freelabel.video.propagate import PropagationConfig, Propagator, consistent, one_hot, warp


def _texture(height, width, seed=0):
    """A smooth random texture flow can lock onto (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (height // 8 + 2, width // 8 + 2, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=8,
                                          mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    return np.clip(big[:height, :width], 0, 255).astype(np.uint8)


def _scene(t, step=3, height=96, width=128):
    """A textured square moving right by ``step`` px per frame over a static textured background."""
    frame = _texture(height, width, 0)
    square = _texture(height, width, 1)
    mask = np.zeros((height, width), np.uint8)
    top, left = 30, 20 + step * t
    frame[top:top + 32, left:left + 32] = square[top:top + 32, 20:52]
    mask[top:top + 32, left:left + 32] = 1
    return frame, mask


def test_flow_of_a_known_translation():
    frame = _texture(120, 160)
    shifted = np.roll(frame, (2, 5), axis=(0, 1))
    for config in (FlowConfig(), FlowConfig(method="farneback"), FlowConfig(working_size=60)):
        flow = OpticalFlow(config)(frame, shifted)
        assert flow.shape == (120, 160, 2)
        inner = flow[20:-20, 20:-20]
        assert np.median(inner[..., 0]) == pytest.approx(5, abs=0.3)
        assert np.median(inner[..., 1]) == pytest.approx(2, abs=0.3)


def test_warp_moves_a_mask_by_exactly_the_flow():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 10:20] = 1
    flow = np.zeros((40, 50, 2), np.float32)
    flow[..., 0], flow[..., 1] = -3, -2  # each target pixel comes from 3 px left and 2 px up
    warped, inside = warp(one_hot(mask, 2), flow)
    expected = np.zeros_like(mask)
    expected[12:22, 13:23] = 1
    assert np.array_equal(warped.argmax(0).numpy(), expected)
    assert not inside[:2].any() and not inside[:, :3].any() and inside[2:, 3:].all()


def test_disoccluded_pixels_fail_the_forward_backward_check():
    """With the true flows of a square moving 6 px right over a static background, exactly the background it
    uncovers fails the check (their backward flow is 0, but the forward flow found there in the source is the
    square's)."""
    (_, mask_a), (_, mask_b) = _scene(0, step=6), _scene(1, step=6)
    forward = np.zeros((*mask_a.shape, 2), np.float32)
    forward[mask_a == 1, 0] = 6
    backward = np.zeros_like(forward)
    backward[mask_b == 1, 0] = -6
    ok = consistent(backward, forward, 0.01, 0.5)
    revealed = (mask_a == 1) & (mask_b == 0)
    assert revealed.sum() == 32 * 6 and np.array_equal(~ok, revealed)
    # and warping with the true backward flow gets every other pixel right
    warped = warp(one_hot(mask_a, 2), backward)[0].argmax(0).numpy()
    assert np.array_equal(warped[ok], mask_b[ok])


def test_propagation_between_key_frames_follows_the_motion():
    scenes = [_scene(t) for t in range(6)]
    frames = [frame for frame, _ in scenes]
    propagator = Propagator()
    results = propagator.between(frames, one_hot(scenes[0][1], 2), one_hot(scenes[-1][1], 2))
    assert len(results) == 4
    def iou(mask, truth):
        return ((mask == 1) & (truth == 1)).sum() / ((mask == 1) | (truth == 1)).sum()

    for t, ((probabilities, mask), (_, truth)) in enumerate(zip(results, scenes[1:-1]), start=1):
        assert probabilities.shape == (2, 96, 128)
        nearest_key = scenes[0][1] if t <= 2 else scenes[-1][1]
        assert iou(mask, truth) > max(0.8, iou(nearest_key, truth) + 0.05)  # beats copying the nearest key mask
        assert (mask == 255).mean() < 0.05
    # one key frame only (after the last key frame): still carried, by one chain
    after = propagator.between(frames, one_hot(scenes[0][1], 2), None)
    assert len(after) == 4 and ((after[0][1] == 1) & (scenes[1][1] == 1)).sum() > 0.8 * (scenes[1][1] == 1).sum()
    with pytest.raises(ValueError):
        propagator.between(frames, None, None)


@pytest.mark.parametrize("values", [{"method": "raft"}, {"dis_preset": "slow"}, {"working_size": 4}])
def test_bad_flow_settings_are_config_errors(values):
    with pytest.raises(ConfigError):
        FlowConfig(**values)


def test_bad_propagation_settings_are_config_errors():
    with pytest.raises(ConfigError):
        PropagationConfig(min_confidence=2)
