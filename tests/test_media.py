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


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_corrupt_image_is_one_line_error(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read broken.png") as err:
        media.read_image(path)
    assert "\n" not in str(err.value)


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
