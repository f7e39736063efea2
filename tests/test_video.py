"""Optical flow and mask propagation on synthetic motion with known answers."""

import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from freelabel.pipelines.cli import main
from freelabel.errors import ConfigError
from freelabel.io import read_classes, read_mask, write_classes, write_image, write_mask
from freelabel.pseudo.config import CrfConfig
from freelabel.pseudo.crf import refine
from freelabel.video.flow import FlowConfig, OpticalFlow
from freelabel.video.frames import frame_index, frame_name
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
    warped, inside = warp(one_hot(mask, 2).transpose(1, 2, 0), flow)
    expected = np.zeros_like(mask)
    expected[12:22, 13:23] = 1
    assert warped.shape == (40, 50, 2) and warped.dtype == np.float32
    assert np.array_equal(warped.argmax(-1), expected)
    assert not inside[:2].any() and not inside[:, :3].any() and inside[2:, 3:].all()


@pytest.mark.parametrize("channels", [1, 3, 513])
def test_warp_interpolates_bilinearly_in_any_number_of_channels(channels):
    """Half a pixel right and down: each inner pixel becomes the mean of its 2 x 2 neighbourhood (more channels
    than OpenCV holds in one image are warped in slices)."""
    values = np.random.default_rng(0).random((12, 16, channels), dtype=np.float32)
    flow = np.full((12, 16, 2), 0.5, np.float32)
    warped, _ = warp(values, flow)
    expected = (values[:-1, :-1] + values[:-1, 1:] + values[1:, :-1] + values[1:, 1:]) / 4
    assert warped.shape == values.shape
    assert np.allclose(warped[:-1, :-1], expected, atol=1e-5)


def test_disoccluded_pixels_fail_the_forward_backward_check():
    """With the true flows of a square moving 6 px right over a static background, exactly the background it
    uncovers fails the check (their backward flow is 0, but the forward flow found there in the source is the
    square's)."""
    (_, mask_a), (_, mask_b) = _scene(0, step=6), _scene(1, step=6)
    forward = np.zeros((*mask_a.shape, 2), np.float32)
    forward[mask_a == 1, 0] = 6
    backward = np.zeros_like(forward)
    backward[mask_b == 1, 0] = -6
    forward_there = warp(forward, backward)[0]
    ok = consistent(backward, forward_there, 0.01, 0.5)
    revealed = (mask_a == 1) & (mask_b == 0)
    assert revealed.sum() == 32 * 6 and np.array_equal(~ok, revealed)
    # and warping with the true backward flow gets every other pixel right
    warped = warp(one_hot(mask_a, 2).transpose(1, 2, 0), backward)[0].argmax(-1)
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
    # after the last key frame, and before the first: every other frame of the gap, by one chain
    after = propagator.between(frames, one_hot(scenes[0][1], 2), None)
    assert len(after) == 5 and iou(after[0][1], scenes[1][1]) > 0.8
    before = propagator.between(frames, None, one_hot(scenes[-1][1], 2))
    assert len(before) == 5 and iou(before[-1][1], scenes[-2][1]) > 0.8
    with pytest.raises(ValueError):
        propagator.between(frames, None, None)


@pytest.mark.parametrize("values", [{"method": "raft"}, {"dis_preset": "slow"}, {"working_size": 4}])
def test_bad_flow_settings_are_config_errors(values):
    with pytest.raises(ConfigError):
        FlowConfig(**values)


def test_bad_propagation_settings_are_config_errors():
    with pytest.raises(ConfigError):
        PropagationConfig(min_confidence=2)


# --- the `freelabel video` command --------------------------------------------------------------------------------

TINY = ["--model", "test-tiny-vit", "--pretrained", "random", "--no-crf"]


@pytest.fixture
def clip_folder(tmp_path):
    """12 frames of the moving square, masks for frames 0, 5 and 10 in keys/ (with classes.txt)."""
    for t in range(12):
        frame, mask = _scene(t)
        write_image(tmp_path / "frames" / f"{t:05d}.png", frame)
        write_mask(tmp_path / "truth" / f"{t:05d}.png", mask)
        if t % 5 == 0:
            write_mask(tmp_path / "keys" / f"{t:05d}.png", mask)
    write_classes(tmp_path / "keys" / "classes.txt", ["background", "square"])
    return tmp_path


def _video(*args):
    return CliRunner().invoke(main, ["video", *map(str, args)])


def test_key_masks_run_without_importing_torch(clip_folder):
    """Propagating given masks needs no CLIP and no torch: importing torch would add seconds to every call, more
    than a short clip's propagation takes."""
    code = ("import sys; from freelabel.pipelines.cli import main; main(sys.argv[1:], standalone_mode=False); "
            "sys.exit(sorted({'torch', 'open_clip'} & set(sys.modules)) or None)")
    done = subprocess.run([sys.executable, "-c", code, "video", str(clip_folder / "frames"), "--key-masks",
                           str(clip_folder / "keys"), "--out", str(clip_folder / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((clip_folder / "out").glob("*.png"))) == 12


def test_frame_names_round_trip():
    assert frame_index(frame_name(123)) == 123 and frame_name(7) == "frame_000007.png"
    with pytest.raises(ValueError):
        frame_index("00007.png")


def test_key_masks_are_propagated_to_every_frame_and_a_rerun_resumes(clip_folder):
    result = _video(clip_folder / "frames", "--key-masks", clip_folder / "keys", "--out", clip_folder / "out")
    assert result.exit_code == 0, result.output
    out = clip_folder / "out"
    assert read_classes(out / "classes.txt") == ["background", "square"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["key_frames"] == 3 and len(manifest["images"]) == 12
    for t in range(12):
        mask, truth = read_mask(out / f"{t:05d}.png"), read_mask(clip_folder / "truth" / f"{t:05d}.png")
        if t % 5 == 0:
            assert np.array_equal(mask, truth)  # key frames keep their given mask
        else:
            assert ((mask == 1) & (truth == 1)).sum() / ((mask == 1) | (truth == 1)).sum() > 0.7
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    again = _video(clip_folder / "frames", "--key-masks", clip_folder / "keys", "--out", out)
    assert again.exit_code == 0 and "0 frame masks written" in again.output and "12 skipped" in again.output
    # a run killed after some frames: the missing ones are redone, to the same bytes
    for name in ("00007.png", "00011.png"):
        (out / name).unlink()
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    (out / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in journal[:7]))
    resumed = _video(clip_folder / "frames", "--key-masks", clip_folder / "keys", "--out", out)
    assert resumed.exit_code == 0, resumed.output
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before


def test_an_unreadable_frame_costs_its_line(clip_folder):
    (clip_folder / "frames" / "00003.png").write_bytes(b"not a png")
    result = _video(clip_folder / "frames", "--key-masks", clip_folder / "keys", "--out", clip_folder / "out")
    assert result.exit_code == 1
    errors = [json.loads(line) for line in (clip_folder / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["path"].endswith("00003.png")
    assert len(list((clip_folder / "out").glob("*.png"))) == 11


def _write_video(path, frames, fourcc="MJPG"):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_a_video_file_is_streamed_and_a_truncated_one_reports_its_missing_frames(clip_folder, tmp_path):
    frames = [_scene(t)[0] for t in range(12)]
    _write_video(tmp_path / "clip.avi", frames)
    keys = tmp_path / "video-keys"
    for t in (0, 5, 10):
        write_mask(keys / frame_name(t), _scene(t)[1])
    write_classes(keys / "classes.txt", ["background", "square"])
    result = _video(tmp_path / "clip.avi", "--key-masks", keys, "--out", tmp_path / "out", "--overlay")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("frame_*.png")) == [frame_name(t) for t in range(12)]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    capture.release()
    data = (tmp_path / "clip.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) * 2 // 3])
    result = _video(tmp_path / "cut.avi", "--key-masks", keys, "--out", tmp_path / "cut")
    assert result.exit_code == 1, result.output
    errors = [json.loads(line) for line in (tmp_path / "cut" / "errors.jsonl").read_text().splitlines()]
    assert errors and all("truncated" in e["message"] for e in errors)
    assert len(errors) + len(list((tmp_path / "cut").glob("frame_*.png"))) == 12


def test_labels_mode_segments_key_frames_and_propagates_the_rest(clip_folder):
    result = _video(clip_folder / "frames", "--labels", "red square,blue circle", "--key-interval", "4", "--out",
                    clip_folder / "out", *TINY)
    assert result.exit_code == 0, result.output
    manifest = json.loads((clip_folder / "out" / "manifest.json").read_text())
    keys = sorted(name for name, entry in manifest["images"].items() if entry["key"])
    assert keys == ["00000.png", "00004.png", "00008.png", "00011.png"]  # every 4th and the last
    assert read_classes(clip_folder / "out" / "classes.txt") == ["background", "red square", "blue circle"]
    assert len(list((clip_folder / "out").glob("*.png"))) == 12
    assert manifest["config"]["propagation"]["crf"] is None  # --no-crf: the labeler has no CRF to refine with


def test_labels_mode_refines_with_the_labelers_crf_by_default(clip_folder):
    crf = {}
    for out, flags in {"default": [], "plain": ["--no-refine"]}.items():
        result = _video(clip_folder / "frames", "--labels", "red square", "--out", clip_folder / out, "--model",
                        "test-tiny-vit", "--pretrained", "random", "--crf-iterations", "1", *flags)
        assert result.exit_code == 0, result.output
        crf[out] = json.loads((clip_folder / out / "manifest.json").read_text())["config"]["propagation"]["crf"]
    assert crf["default"]["iterations"] == 1 and crf["plain"] is None


def test_labels_mode_resumes_and_refuses_another_jobs_folder_in_one_line(clip_folder):
    def run(key_interval: int):
        return _video(clip_folder / "frames", "--labels", "red square", "--key-interval", key_interval, "--out",
                      clip_folder / "out", *TINY)

    assert run(4).exit_code == 0
    again = run(4)
    assert again.exit_code == 0 and "0 frame masks written" in again.output and "12 skipped" in again.output, \
        again.output
    other = run(3)
    assert other.exit_code == 2 and "another job" in other.output and "Traceback" not in other.output, other.output


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of"),
    (["--labels", "a", "--key-masks", "{keys}"], "exactly one of"),
    (["--key-masks", "{frames}"], "classes.txt"),
])
def test_video_usage_errors_are_one_line(clip_folder, args, message):
    args = [a.format(keys=clip_folder / "keys", frames=clip_folder / "frames") for a in args]
    result = _video(clip_folder / "frames", "--out", clip_folder / "out", *args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_pixels_failing_every_check_are_kept_only_where_the_key_frames_agree():
    scenes = [_scene(t, step=5) for t in range(6)]
    frames, first, last = [f for f, _ in scenes], one_hot(scenes[0][1], 2), one_hot(scenes[-1][1], 2)
    strict = Propagator(PropagationConfig(flagged_min_confidence=None)).between(frames, first, last)
    default = Propagator().between(frames, first, last)
    for (_, strict_mask), (_, mask) in zip(strict, default):
        assert (mask == 255).sum() <= (strict_mask == 255).sum()
        assert np.array_equal(mask[strict_mask != 255], strict_mask[strict_mask != 255])  # only 255s are filled


def test_refining_snaps_a_propagated_mask_to_its_frames_edges():
    frame = np.full((64, 80, 3), 40, np.uint8)  # a static red square; the key masks miss it by 4 px either side
    frame[20:44, 28:52] = (200, 60, 60)
    truth = np.zeros((64, 80), np.uint8)
    truth[20:44, 28:52] = 1
    first, last = one_hot(np.roll(truth, -4, axis=1), 2), one_hot(np.roll(truth, 4, axis=1), 2)

    def iou(mask):
        return ((mask == 1) & (truth == 1)).sum() / ((mask == 1) | (truth == 1)).sum()

    plain = Propagator(PropagationConfig()).between([frame] * 5, first, last)
    refined = Propagator(PropagationConfig(crf=CrfConfig())).between([frame] * 5, first, last)
    for (_, plain_mask), (probabilities, mask) in zip(plain, refined):
        assert iou(mask) > 0.95 and iou(plain_mask) < 0.8
        assert np.allclose(probabilities.sum(0), 1, atol=1e-4)


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_a_gap_is_refined_in_one_batch_as_frame_by_frame(backend, device):
    scenes = [_scene(t, step=5) for t in range(6)]  # each frame its own: a frame refined with another's pixels differs
    frames, first, last = [f for f, _ in scenes], one_hot(scenes[0][1], 2), one_hot(scenes[-1][1], 2)
    crf = CrfConfig(backend=backend)
    plain = Propagator().between(frames, first, last)
    batched = Propagator(PropagationConfig(crf=crf), device).between(frames, first, last)
    assert len(batched) == len(plain) == 4
    for frame, (blend, _), (probabilities, mask) in zip(frames[1:-1], plain, batched):
        alone = refine(torch.from_numpy(np.ascontiguousarray(blend))[None].to(device),
                       torch.from_numpy(frame)[None].to(device), crf)[0].cpu().numpy()
        assert probabilities.shape == (2, 96, 128) and probabilities.dtype == np.float32
        assert mask.shape == (96, 128) and mask.dtype == np.uint8
        assert np.allclose(probabilities, alone, atol=1e-5)
        assert not np.allclose(probabilities, blend, atol=1e-2)  # the CRF did change the blend
        assert np.array_equal(mask[mask != 255], probabilities.argmax(0)[mask != 255])


def test_refine_is_off_by_default_and_the_crf_flags_set_it(clip_folder):
    runs = {"plain": [], "explicit": ["--no-refine"], "off": ["--refine", "--no-crf"], "refined": ["--refine"],
            "torch": ["--refine", "--crf-backend", "torch", "--device", "cpu"]}
    for out, flags in runs.items():
        assert _video(clip_folder / "frames", "--key-masks", clip_folder / "keys", "--out", clip_folder / out,
                      *flags).exit_code == 0
    crf = {out: json.loads((clip_folder / out / "manifest.json").read_text())["config"]["propagation"]["crf"]
           for out in runs}
    assert crf["plain"] is None and crf["explicit"] is None and crf["off"] is None
    assert crf["refined"] == dataclasses.asdict(CrfConfig())
    assert crf["torch"] == dataclasses.asdict(CrfConfig(backend="torch"))
    masks = {out: read_mask(clip_folder / out / "00003.png") for out in ("plain", "refined", "torch")}
    # each CRF reached the masks: all three differ
    assert not any(np.array_equal(masks[a], masks[b]) for a, b in (("plain", "refined"), ("plain", "torch"),
                                                                   ("refined", "torch")))
