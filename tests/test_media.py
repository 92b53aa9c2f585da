import numpy as np
import pytest
from PIL import Image

from helpers import media
from helpers.errors import InputError


def test_image_formats_are_normalised(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top half opaque red, bottom transparent → white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = media.read_image(tmp_path / "a.png")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (200, 0, 0) and tuple(img[-1, 0]) == (255, 255, 255)

    Image.fromarray(np.full((16, 16), 77, np.uint8), "L").save(tmp_path / "g.png")
    assert tuple(media.read_image(tmp_path / "g.png")[3, 3]) == (77, 77, 77)

    sixteen = np.full((16, 16), 65535, np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "s.png")
    assert media.read_image(tmp_path / "s.png").max() == 255


def test_huge_image_is_downscaled():
    img = media.read_image(np.zeros((100, 50, 3), np.uint8), max_side=40)
    assert img.shape == (40, 20, 3)


@pytest.mark.parametrize("content, message", [
    (b"", "broken.png is empty \\(0 bytes\\)"),
    (b"not an image at all", "cannot read broken.png as an image \\(not an image format"),
    ("cut", "cannot read broken.png as an image \\(.*damaged or cut off"),
])
def test_damaged_image_says_what_is_wrong_in_one_line(tmp_path, content, message):
    path = tmp_path / "broken.png"
    if content == "cut":
        media.write_image(path, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
        content = path.read_bytes()[:600]
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        media.read_image(path)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=f"^{tmp_path} is a folder: give one image file$"):
        media.read_image(tmp_path)


def _png_header_only(path, width, height):
    """A PNG that declares ``width`` × ``height`` pixels (no pixel data: opening reads only the header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [20000, 11000, 10000])
def test_huge_images_give_one_line_and_no_library_warning(tmp_path, side):
    import warnings

    path = _png_header_only(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as err:
            media.read_image(path)
    assert not [w for w in caught if "DecompressionBomb" in w.category.__name__], "PIL's warning reached the user"
    assert type(err.value) is InputError and "\n" not in str(err.value)
    if side > 10000:  # over the limit: refused by size (10000² is allowed; this header has no pixels, so damaged)
        assert "huge.png is too large to open" in str(err.value) and "shrink it" in str(err.value)
    else:
        assert "damaged or cut off" in str(err.value)


def test_large_jpeg_is_decoded_downscaled(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((1000, 600, 3), 90, np.uint8)).save(tmp_path / "big.jpg")
    image = media.read_image(tmp_path / "big.jpg", max_side=200)
    assert image.shape == (200, 120, 3) and abs(int(image[50, 50, 0]) - 90) < 4


def test_missing_and_tiny_images(tmp_path):
    with pytest.raises(InputError, match="not found"):
        media.read_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="only 4×4"):
        media.read_image(np.zeros((4, 4, 3), np.uint8))


def moving_square(n=12, h=32, w=48):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, 8:20, 2 + 2 * i : 14 + 2 * i] = 255
    return frames


def test_video_roundtrip_stride_and_info(tmp_path):
    frames = moving_square()
    path = media.write_video(tmp_path / "v.mp4", frames, fps=10)
    info = media.video_info(path)
    assert (info.frame_count, info.width, info.height) == (12, 48, 32)
    video = media.read_video(path, stride=2, max_frames=4)
    assert video.frames.shape == (4, 32, 48, 3) and video.fps == pytest.approx(10)
    assert list(video.indices) == [0, 2, 4, 6] and video.source_frame_count >= 7
    # the square moved: decoded frames follow the written ones (lossy codec, so compare coarsely)
    assert np.abs(video.frames[1].astype(int) - frames[2].astype(int)).mean() < 12


def test_video_errors(tmp_path):
    path = media.write_video(tmp_path / "v.mp4", moving_square(3), fps=5)
    with pytest.raises(InputError, match="at least 10"):
        media.read_video(path, min_frames=10)
    (tmp_path / "bad.mp4").write_bytes(b"garbage")
    with pytest.raises(InputError):
        media.read_video(tmp_path / "bad.mp4")
    with pytest.raises(InputError, match="stride"):
        media.read_video(path, stride=0)


def _ffmpeg(*args):
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, timeout=60)


def test_unreadable_videos_say_what_is_wrong(tmp_path):
    path = media.write_video(tmp_path / "v.mp4", moving_square(6), fps=5)
    (tmp_path / "cut.mp4").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", tmp_path / "song.mp4")
    expected = {"cut.mp4": "cut.mp4 is incomplete (cut off while it was downloaded or copied",
                "empty.mp4": "empty.mp4 is empty (0 bytes)",
                "song.mp4": "song.mp4 has no video track (only audio)"}
    for name, message in expected.items():
        with pytest.raises(InputError) as err:
            media.video_info(tmp_path / name)
        assert str(err.value).startswith(message) and "mp4/mov/webm" not in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="is a folder: give a video file"):
        media.video_info(tmp_path)


def test_variable_frame_rate_is_reported(tmp_path):
    for i, frame in enumerate(moving_square(8)):
        media.write_image(tmp_path / f"f{i}.png", frame)
    durations = [0.04] * 4 + [0.16] * 4  # 25 fps, then 6.25 fps: played frame by frame the motion speeds up 4×
    listing = "".join(f"file 'f{i}.png'\nduration {d}\n" for i, d in enumerate(durations)) + "file 'f7.png'\n"
    (tmp_path / "list.txt").write_text(listing)
    _ffmpeg("-f", "concat", "-safe", "0", "-i", tmp_path / "list.txt", "-fps_mode", "vfr", "-pix_fmt", "yuv420p",
            tmp_path / "vfr.mp4")
    with pytest.warns(UserWarning, match="vfr.mp4 has a variable frame rate"):
        media.video_info(tmp_path / "vfr.mp4")
    import warnings

    steady = media.write_video(tmp_path / "cfr.mp4", moving_square(8), fps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        media.video_info(steady)


def _fails_when_full(tmp_path, limit_bytes):
    """Write a video in a child process whose files may not grow past ``limit_bytes`` (a disk that fills up)."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with an error instead of killing ffmpeg
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    script = ("import numpy as np, sys\nfrom helpers import media\nfrom helpers.errors import OutputError\n"
              "frames = np.random.default_rng(0).integers(0, 256, (40, 96, 96, 3), dtype=np.uint8)\n"
              "try:\n    media.write_video(sys.argv[1], frames, 8)\nexcept OutputError as exc:\n"
              "    print('OutputError:', exc)\nelse:\n    print('written')\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.mp4")], capture_output=True, text=True,
                          preexec_fn=limit, env=env, timeout=120)
    return done.stdout.strip() + done.stderr.strip()[-500:]


def test_full_disk_is_detected_and_leaves_no_partial_file(tmp_path):
    said = _fails_when_full(tmp_path, 50_000)
    assert said.startswith("OutputError: could not write out.mp4 to"), said
    assert "it needs more than" in said and "free some space" in said
    assert list(tmp_path.iterdir()) == []


def test_video_cut_short_without_an_error_is_caught(tmp_path, monkeypatch):
    import mediapy

    from helpers.errors import OutputError

    encode = mediapy.write_video

    def cut_short(path, *args, **kwargs):  # ffmpeg ends "normally" but the file lost its end
        encode(path, *args, **kwargs)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])

    monkeypatch.setattr(mediapy, "write_video", cut_short)
    with pytest.raises(OutputError, match="could not write v.mp4 .*holds 0 of 6 frames"):
        media.write_video(tmp_path / "v.mp4", moving_square(6), fps=5)
    assert list(tmp_path.iterdir()) == []


def test_copy_onto_a_full_drive_says_how_much_space_is_needed(tmp_path, monkeypatch):
    import errno

    from helpers.errors import OutputError

    def full(source, target):
        open(target, "wb").write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(media.shutil, "copyfile", full)
    with pytest.raises(OutputError) as err:
        media.write_video(tmp_path / "v.mp4", moving_square(6), fps=5)
    message = str(err.value)
    assert message.startswith(f"could not write v.mp4 to {tmp_path} (No space left on device): it needs ")
    assert " kB and " in message and " free there" in message
    assert list(tmp_path.iterdir()) == []


def test_side_by_side_holds_last_frame_of_an_image():
    video = moving_square(5)
    still = np.full((64, 64, 3), 9, np.uint8)
    both = media.side_by_side(still, video, gap=2)
    assert both.shape == (5, 64, 64 + 2 + 96, 3)
    assert (both[:, :, :64] == 9).all()


def test_preview_is_small_html_video():
    html = media.preview_html(np.repeat(moving_square(8, 240, 640), 1, axis=0), fps=8, max_side=128)
    assert "<video" in html and "base64" in html
    assert len(html) < 200_000


def test_previews_fit_a_box_and_never_upscale():
    portrait_pair = np.zeros((2, 1024, 1152, 3), np.uint8)  # control | result at 576×1024 each
    assert media.fit_box(portrait_pair, *media.PREVIEW_BOX).shape == (2, 512, 576, 3)
    wide = np.zeros((1, 240, 1280, 3), np.uint8)
    assert media.fit_box(wide, 768, 512).shape == (1, 144, 768, 3)
    small = np.zeros((3, 64, 64, 3), np.uint8)
    assert media.fit_box(small, 768, 512) is small
    html = media.preview_html(portrait_pair, fps=8)
    assert 'width="576"' in html and 'height="512"' in html


def test_comparison_grid_and_contact_sheet_label_every_clip():
    rng = np.random.default_rng(0)
    clips = [(f"clip {k}", rng.integers(0, 256, (5, 40, 60, 3), dtype=np.uint8)) for k in range(3)]
    grid = media.comparison_grid(clips, columns=2, tile=90, gap=4)
    tile_height = media.LABEL_HEIGHT + 60  # label band + 90 px wide at 3:2
    assert grid.shape == (5, 2 * tile_height + 4, 2 * 90 + 4, 3) and grid.dtype == np.uint8
    band = grid[0, :media.LABEL_HEIGHT, :90]
    assert (band == 255).mean() > 0.5 and (band < 128).any()  # white with dark text
    np.testing.assert_array_equal(grid[:, media.LABEL_HEIGHT:tile_height, :90], media.resize(clips[0][1], (90, 60)))
    assert (grid[:, tile_height + 4:, 94:] == 255).all()  # the empty last tile of an odd count stays white

    sheet = media.contact_sheet(clips, max_columns=3, thumb=30, label_width=50)
    assert sheet.shape == (media.LABEL_HEIGHT + 3 * 30, 50 + 3 * 45, 3)  # header row + a row per clip; frames 0, 2, 4
    np.testing.assert_array_equal(sheet[media.LABEL_HEIGHT:media.LABEL_HEIGHT + 30, 50 + 45:50 + 90],
                                  media.resize(clips[0][1][2], (45, 30)))


def test_dim_under_keeps_the_drawing_over_a_darker_picture():
    picture = np.full((4, 4, 3), 200, np.uint8)
    drawing = np.zeros_like(picture)
    drawing[1, 1] = (255, 0, 0)
    out = media.dim_under(picture, drawing)
    assert tuple(out[0, 0]) == (100, 100, 100) and tuple(out[1, 1]) == (255, 100, 100)
