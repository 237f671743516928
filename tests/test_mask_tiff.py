"""masks.tif as written by `LabelStackWriter` (own BigTIFF page writer): every reader sees `draw_labels`.

Readers checked: tifffile (imread, pages, series), `read_label_stack`, libtiff
through imagecodecs, and Pillow. Truncated files (a crash at any byte) still give
every complete page; files written earlier by tifffile still read.
"""

from __future__ import annotations

import json

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from sam4em_live.io.mask_tiff import TILE_PX, LabelStackWriter, draw_labels, read_label_stack
from sam4em_live.particles import ParticleMask


def random_masks(rng: np.random.Generator, shape: tuple[int, int]) -> list[ParticleMask]:
    """0-6 masks: anywhere, at edges and corners, overlapping, spanning tiles, empty, absent or undrawable."""
    rows, cols = shape
    masks: list[ParticleMask] = []
    for _ in range(int(rng.integers(0, 7))):
        h, w = int(rng.integers(1, min(rows, 300) + 1)), int(rng.integers(1, min(cols, 300) + 1))
        y0, x0 = int(rng.integers(0, rows - h + 1)), int(rng.integers(0, cols - w + 1))
        place = rng.integers(0, 4)
        if place == 1:  # against the bottom/right edge (the padded edge tiles)
            y0, x0 = rows - h, cols - w
        elif place == 2:  # top-left corner
            y0, x0 = 0, 0
        crop = rng.random((h, w)) < rng.choice([0.0, 0.05, 0.5, 1.0])
        particle = int(rng.choice([1, 2, 3, int(rng.integers(1, 65536)), 65535]))
        masks.append(ParticleMask(particle, True, 0.9, (x0, y0, x0 + w, y0 + h), crop))
    kind = rng.integers(0, 8)
    if kind == 0:  # not drawable: counted as skipped by both paths
        masks.append(ParticleMask(65536, True, 0.9, (0, 0, 2, 2), np.ones((2, 2), bool)))
    elif kind == 1:
        masks.append(ParticleMask(7, True, 0.9, (cols - 1, 0, cols + 3, 2), np.ones((2, 4), bool)))  # off the frame
    elif kind == 2:
        masks.append(ParticleMask(8, False, 0.0))  # lost particle: no mask this frame
    return masks


def write_random_stack(path, shape, n_pages, seed, flush_every=3):
    """Write pages with `append_masks`; return the expected pages and frame indices."""
    rng = np.random.default_rng(seed)
    writer = LabelStackWriter(path)
    expected, frames = [], []
    for page in range(n_pages):
        masks = [] if page == 1 else random_masks(rng, shape)  # page 1: a frame with no masks at all
        frame = int(rng.integers(0, 2**40)) if page == n_pages - 1 else 3 * page + 1
        labels, skipped = draw_labels(shape, masks)
        assert writer.append_masks(shape, masks, frame) == skipped
        expected.append(labels)
        frames.append(frame)
        if page % flush_every == flush_every - 1:
            writer.flush()
    writer.close()
    assert writer.pages == n_pages
    return np.stack(expected), frames


@pytest.mark.parametrize("shape, n_pages, seed", [
    ((300, 517), 24, 0), ((128, 128), 10, 1), ((129, 255), 12, 2), ((1, 1), 4, 3), ((40, 700), 8, 4),
    ((1024, 1024), 4, 5),
])
def test_every_reader_sees_the_drawn_labels(tmp_path, shape, n_pages, seed):
    path = tmp_path / "masks.tif"
    expected, frames = write_random_stack(path, shape, n_pages, seed)
    assert expected.any() and not expected[1].any()  # the data exercise labels and an empty page

    np.testing.assert_array_equal(tifffile.imread(path), expected)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 1 and tif.series[0].shape == (n_pages, *shape)
        assert tif.series[0].dtype == np.uint16 and not (tif.is_imagej or tif.is_shaped)
        np.testing.assert_array_equal(tif.series[0].asarray(), expected)
        for page, labels, frame in zip(tif.pages, expected, frames, strict=True):
            np.testing.assert_array_equal(page.asarray(), labels)
            assert json.loads(page.description) == {"frame": frame}
            assert page.compression == 8 and page.photometric == 1 and page.tilewidth == TILE_PX
    stack, read_frames = read_label_stack(path)
    np.testing.assert_array_equal(stack, expected)
    assert read_frames == frames
    libtiff = imagecodecs.tiff_decode(path.read_bytes(), index=None)  # libtiff, not tifffile
    np.testing.assert_array_equal(libtiff.reshape(expected.shape), expected)
    with Image.open(path) as image:  # Pillow's own TIFF reader with libtiff for deflate tiles
        assert image.n_frames == n_pages
        for index, labels in enumerate(expected):
            image.seek(index)
            np.testing.assert_array_equal(np.asarray(image), labels)


def test_empty_tiles_share_one_blob_and_pages_hold_only_their_touched_tiles(tmp_path):
    path = tmp_path / "masks.tif"
    masks = [ParticleMask(5, True, 1.0, (120, 250, 140, 270), np.ones((20, 20), bool))]  # rows 250-269, cols 120-139: four tiles
    with_box_only = [ParticleMask(6, True, 1.0, (0, 0, 200, 10), np.eye(10, 200, dtype=bool))]  # x < 10: tile 0
    writer = LabelStackWriter(path)
    for frame, page_masks in enumerate([masks, [], with_box_only]):
        writer.append_masks((1024, 1024), page_masks, frame)
    writer.close()
    with tifffile.TiffFile(path) as tif:
        shared = {(o, c) for page in tif.pages for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)
                  if np.count_nonzero(np.asarray(page.dataoffsets) == o) > 1}
        assert len(shared) == 1  # one empty-tile blob for the whole file
        own = [sorted(i for i, o in enumerate(page.dataoffsets) if (o, page.databytecounts[i]) not in shared)
               for page in tif.pages]
    assert own == [[8, 9, 16, 17], [], [0]]  # the box also touches tile 1, but its mask does not


def test_append_and_append_masks_write_the_same_bytes(tmp_path):
    rng = np.random.default_rng(11)
    shape = (300, 517)
    painted, sparse = LabelStackWriter(tmp_path / "a.tif"), LabelStackWriter(tmp_path / "b.tif")
    for frame in range(12):
        masks = random_masks(rng, shape)
        painted.append(draw_labels(shape, masks)[0], frame)
        sparse.append_masks(shape, masks, frame)
        if frame % 5 == 4:
            painted.flush()
            sparse.flush()
    painted.close()
    sparse.close()
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def _page_ends(path) -> list[int]:
    """File position just past each page's IFD (the last byte a page needs in this writer's layout)."""
    with tifffile.TiffFile(path) as tif:
        return [page.offset + 8 + 20 * len(page.tags) + 8 for page in tif.pages]


def test_a_file_cut_at_any_byte_gives_every_complete_page(tmp_path):
    path = tmp_path / "masks.tif"
    shape = (150, 260)
    expected, frames = write_random_stack(path, shape, 5, seed=7, flush_every=2)
    data = path.read_bytes()
    ends = _page_ends(path)
    assert ends[-1] == len(data) and ends == sorted(ends)
    with tifffile.TiffFile(path) as tif:
        ifds = [range(page.offset, end) for page, end in zip(tif.pages, ends, strict=True)]
    # Every byte of the first and the last page's IFD, around every page end, and every 7th byte elsewhere
    # (all ~8000 positions take ~15 s; these ~1900 cover each kind of cut).
    cuts = {*ifds[0], *ifds[-1], *range(0, len(data), 7), *(end + d for end in ends for d in (-1, 0, 1))}
    cut_path = tmp_path / "cut.tif"
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        cut_path.write_bytes(data[:cut])
        stack, read_frames = read_label_stack(cut_path)
        complete = sum(end <= cut for end in ends)
        assert read_frames == frames[:complete], cut
        np.testing.assert_array_equal(stack.reshape(-1, *shape), expected[:complete])


def test_pages_reach_the_file_only_on_flush_and_a_crash_keeps_the_flushed_ones(tmp_path):
    path = tmp_path / "masks.tif"
    masks = [ParticleMask(3, True, 1.0, (10, 10, 30, 30), np.ones((20, 20), bool))]
    writer = LabelStackWriter(path)
    writer.append_masks((200, 200), masks, 0)
    header_size = path.stat().st_size  # the header at once: a valid TIFF of no pages
    assert read_label_stack(path)[1] == [] and writer.pages_on_disk == 0
    writer.flush()
    writer.append_masks((200, 200), masks, 1)
    writer.append_masks((200, 200), [], 2)
    size_after_first_flush = path.stat().st_size
    assert size_after_first_flush > header_size and writer.pages_on_disk == 1
    assert read_label_stack(path)[1] == [0]  # the "crash" view: the file as it is on disk now
    writer.flush()
    assert path.stat().st_size > size_after_first_flush and read_label_stack(path)[1] == [0, 1, 2]
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        writer.append_masks((200, 200), masks, 3)
    assert writer.pages == 3


def test_a_stack_without_pages_reads_empty(tmp_path):
    path = tmp_path / "masks.tif"
    LabelStackWriter(path).close()
    stack, frames = read_label_stack(path)
    assert stack.shape == (0, 0, 0) and frames == []
    with pytest.raises(FileExistsError):  # never overwrites a run's file
        LabelStackWriter(path)


def test_bad_pages_are_refused(tmp_path):
    writer = LabelStackWriter(tmp_path / "masks.tif")
    with pytest.raises(ValueError, match="uint16"):
        writer.append(np.zeros((10, 10), np.int32), 0)
    with pytest.raises(ValueError, match="2-D"):
        writer.append(np.zeros((2, 10, 10), np.uint16), 0)
    writer.close()
    not_tiff = tmp_path / "short.tif"
    not_tiff.write_bytes(b"MM\x00")
    with pytest.raises(ValueError, match="not a little-endian BigTIFF"):
        read_label_stack(not_tiff)


@pytest.mark.parametrize("cut", ["none", "in_last_ifd", "in_last_data"])
def test_stacks_written_by_tifffile_still_read(tmp_path, cut):
    """The format of earlier versions (tifffile's writer, every tile stored) reads the same way."""
    path = tmp_path / "old.tif"
    rng = np.random.default_rng(5)
    shape = (300, 517)
    expected = [draw_labels(shape, random_masks(rng, shape))[0] for _ in range(4)]
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for frame, labels in enumerate(expected):
            tif.write(labels, tile=(TILE_PX, TILE_PX), photometric="minisblack", compression="zlib",
                      description=json.dumps({"frame": frame}), metadata=None)
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[-1]
        cut_at = {"none": None, "in_last_ifd": last.offset + 30,
                  "in_last_data": last.dataoffsets[-1] + last.databytecounts[-1] // 2}[cut]
    if cut_at is not None:
        with open(path, "r+b") as fh:
            fh.truncate(cut_at)
    kept = 4 if cut_at is None else 3
    stack, frames = read_label_stack(path)
    assert frames == list(range(kept))
    np.testing.assert_array_equal(stack, np.stack(expected[:kept]))


def test_zlib_fallback_without_zlib_ng_reads_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(imagecodecs.ZLIBNG, "available", False)  # a build of imagecodecs without zlib-ng
    expected, frames = write_random_stack(tmp_path / "masks.tif", (300, 517), 6, seed=9)
    stack, read_frames = read_label_stack(tmp_path / "masks.tif")
    np.testing.assert_array_equal(stack, expected)
    assert read_frames == frames


def test_pages_past_the_pending_limit_are_written_out_before_flush(tmp_path, monkeypatch):
    from sam4em_live.io import bigtiff_pages

    monkeypatch.setattr(bigtiff_pages, "MAX_PENDING_BYTES", 2000)  # about every other page at this size
    path = tmp_path / "masks.tif"
    expected, frames = write_random_stack(path, (300, 517), 10, seed=12, flush_every=100)
    stack, read_frames = read_label_stack(path)
    np.testing.assert_array_equal(stack, expected)
    assert read_frames == frames


def test_page_writer_stores_short_values_in_the_entry(tmp_path):
    """TIFF requires values of <= 8 bytes inside the IFD entry: a short description, one tile's offset."""
    from sam4em_live.io.bigtiff_pages import BigTiffPageWriter

    tile = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16)
    writer = BigTiffPageWriter(open(tmp_path / "a.tif", "xb+"),  # noqa: SIM115 - the writer closes it
                               imagecodecs.zlib_encode(np.zeros_like(tile)), 16)
    writer.append_page((16, 16), {0: imagecodecs.zlib_encode(tile)}, "{}")
    writer.append_page((10, 40), {2: imagecodecs.zlib_encode(tile)}, "a longer description")
    with pytest.raises(ValueError, match="tile 3 outside"):
        writer.append_page((10, 40), {3: b""}, "")
    writer.close()
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        first, second = tif.pages
        assert first.description == "{}" and first.tags[270].valueoffset == first.tags[270].offset + 12
        np.testing.assert_array_equal(first.asarray(), tile)
        assert second.description == "a longer description"
        np.testing.assert_array_equal(second.asarray()[:, 32:], tile[:10, :8])
        assert not second.asarray()[:, :32].any()
    with pytest.raises(ValueError, match="multiple of 16"):
        BigTiffPageWriter(open(tmp_path / "b.tif", "xb+"), b"", 100)  # noqa: SIM115 - refused, then collected


# ---------------------------------------------------------------- the recorder's layout (io.label_stack_layout)


def test_layout_one_page_per_frame_calibrated_imagej_count_current_at_every_flush(tmp_path):
    from sam4em_live.io.label_stack_layout import LabelStackLayout, page_frame

    path = tmp_path / "masks.tif"
    masks = [ParticleMask(4, True, 1.0, (5, 6, 25, 26), np.ones((20, 20), bool))]
    writer = LabelStackWriter(path, layout=LabelStackLayout(pixel_size_nm=0.27, fps=80.0, series=2, series_id="a=b\nc"))
    seen = []
    for frame in (3, 4, 9, 10, 15):  # frames 0-2, 5-8 and 11-14 had no result
        writer.append_masks((130, 140), masks, frame)
        writer.flush()
        with tifffile.TiffFile(path) as tif:  # what a reader sees between flushes (and after a kill)
            assert tif.imagej_metadata["images"] == tif.imagej_metadata["frames"] == len(tif.pages) == frame + 1
            seen.append(len(tif.pages))
    writer.close()
    assert seen == [4, 5, 10, 11, 16] and writer.first_frame == 0
    labels, frames = read_label_stack(path)
    assert frames == list(range(16)) and [bool(p.any()) for p in labels] == [f in (3, 4, 9, 10, 15) for f in range(16)]
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
        assert (meta["unit"], meta["finterval"], meta["content"], meta["series"]) == ("nm", 1 / 80.0, "labels", 2)
        assert meta["series_id"] == "a_b_c"  # cannot break the key=value lines
        assert tif.pages.first.tags["XResolution"].value == (100, 27)  # 1 / 0.27 nm
        assert [page_frame(p.description) for p in tif.pages] == list(range(16))
    backwards = LabelStackWriter(tmp_path / "b.tif", layout=LabelStackLayout())
    backwards.append_masks((8, 8), [], 5)
    with pytest.raises(ValueError, match="increasing"):
        backwards.append_masks((8, 8), [], 5)
    backwards.close()
    late = LabelStackWriter(tmp_path / "late.tif", layout=LabelStackLayout())  # a camera joined at frame 10**6
    late.append_masks((8, 8), [], 10**6)
    late.close()
    assert read_label_stack(tmp_path / "late.tif")[1] == [10**6]


def test_layout_a_file_cut_at_any_page_is_made_whole_with_its_imagej_count(tmp_path):
    from sam4em_live.io.label_stack_layout import LabelStackLayout
    from sam4em_live.io.mask_tiff import end_at_last_complete_page

    path = tmp_path / "masks.tif"
    writer = LabelStackWriter(path, layout=LabelStackLayout(pixel_size_nm=2.0))
    mask = [ParticleMask(1, True, 1.0, (0, 0, 4, 4), np.ones((4, 4), bool))]
    for frame in range(0, 12, 2):
        writer.append_masks((40, 50), mask, frame)
    writer.close()
    data = path.read_bytes()
    ends = _page_ends(path)
    for cut in (ends[0], ends[3] - 1, ends[5] + 3, ends[-1] - 1):
        cut_path = tmp_path / f"cut{cut}.tif"
        cut_path.write_bytes(data[:cut])
        frames = end_at_last_complete_page(cut_path)
        assert frames == list(range(sum(end <= cut for end in ends)))
        with tifffile.TiffFile(cut_path) as tif:
            assert tif.imagej_metadata["images"] == len(tif.pages) == len(frames)
            assert tif.series[0].shape == ((len(frames), 40, 50) if len(frames) > 1 else (40, 50))  # tifffile squeezes
