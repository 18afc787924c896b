"""Hostile-upload checks: images (format, size limits before decoding, truncation), zips (traversal, links,
bombs, lying headers) and paths resolved inside a folder."""
from __future__ import annotations

import hashlib
import io
import random
import stat
import struct
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from annotations.errors import ImageRejected, UnsafeArchiveError
from annotations.files import (ArchiveLimits, CheckedImage, ImageLimits, check_image, read_zip, resolve_inside,
                               safe_member_name)
from engine.errors import InputError

MIB = 2**20


def _image_bytes(fmt: str, size=(64, 48), mode="RGB", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt, **save)
    return buffer.getvalue()


def _noise_jpeg(side=128) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 20x20 PNG whose IHDR (and its CRC) is patched to claim another size."""
    data = bytearray(_image_bytes("PNG", (20, 20)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for entry, payload in entries:
            archive.writestr(entry, payload)
    return buffer.getvalue()


def _patch_single_member(data: bytes, local_offset: int, central_offset: int, value: bytes) -> bytes:
    """Overwrite one field in both the local header and the central directory entry of a one-member zip."""
    patched = bytearray(data)
    local, central = patched.index(b"PK\x03\x04"), patched.index(b"PK\x01\x02")
    patched[local + local_offset:local + local_offset + len(value)] = value
    patched[central + central_offset:central + central_offset + len(value)] = value
    return bytes(patched)


# ---------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("fmt, expected, suffix", [("JPEG", "jpeg", ".jpg"), ("PNG", "png", ".png"),
                                                   ("WEBP", "webp", ".webp"), ("BMP", "bmp", ".bmp")])
def test_accepted_formats_round_trip(fmt, expected, suffix):
    data = _image_bytes(fmt, (64, 48))
    checked = check_image(data, "photo")
    assert isinstance(checked, CheckedImage)
    assert checked.sha256 == hashlib.sha256(data).hexdigest()
    assert (checked.format, checked.suffix) == (expected, suffix)
    assert (checked.width, checked.height) == (64, 48)
    assert checked.data == data


@pytest.mark.parametrize("mode", ["RGBA", "L", "LA", "P", "1"])
def test_png_modes_accepted(mode):
    checked = check_image(_image_bytes("PNG", (40, 30), mode=mode))
    assert (checked.format, checked.width, checked.height) == ("png", 40, 30)


@pytest.mark.parametrize("orientation, displayed", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation_gives_displayed_size(orientation, displayed):
    exif = Image.Exif()
    exif[0x0112] = orientation
    checked = check_image(_image_bytes("JPEG", (40, 20), exif=exif))
    assert (checked.width, checked.height) == displayed


def test_mpo_from_a_phone_camera_is_a_jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 32))])
    assert check_image(buffer.getvalue()).format == "jpeg"


def test_fifty_megapixels_rejected_from_the_header_without_decoding(monkeypatch):
    data = _image_bytes("PNG", (10000, 5000), mode="1")
    assert len(data) < 200_000

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageRejected, match=r"'big.png' is 10000x5000 pixels \(50,000,000 pixels\): at most "
                                            r"40,000,000 pixels are accepted"):
        check_image(data, "big.png")


def test_header_claiming_ten_gigapixels_rejected():
    max_pixels = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageRejected, match=r"'claims.png' claims too many pixels.*at most 40,000,000 pixels"):
        check_image(_png_claiming(100_000, 100_000), "claims.png")
    assert Image.MAX_IMAGE_PIXELS == max_pixels


def test_header_over_max_side_rejected_by_our_check():
    with pytest.raises(ImageRejected, match=r"'wide.png' is 20000x20 pixels: sides of at most 16384"):
        check_image(_png_claiming(20_000, 20), "wide.png")


def test_pil_bomb_warning_becomes_a_rejection_under_generous_limits():
    generous = ImageLimits(max_pixels=10**12, max_side=10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rejection must not depend on the caller's warning filters
        with pytest.raises(ImageRejected, match=r"'warn.png' claims too many pixels"):
            check_image(_png_claiming(10_000, 10_000), "warn.png", generous)


def test_header_within_limits_but_missing_pixel_data_rejected_on_decode():
    with pytest.raises(ImageRejected, match=r"'short.png' is corrupt or truncated"):
        check_image(_png_claiming(2000, 2000), "short.png")


def test_truncated_jpeg_rejected():
    data = _noise_jpeg()
    check_image(data)
    with pytest.raises(ImageRejected, match=r"'half.jpg' is corrupt or truncated.*complete JPEG, PNG, WEBP or BMP"):
        check_image(data[: len(data) // 2], "half.jpg")


@pytest.mark.parametrize("data", [b"hello, this is a text file, not an image\n" * 4,
                                  random.Random(0).randbytes(4096)], ids=["text", "random"])
def test_not_an_image_rejected(data):
    with pytest.raises(ImageRejected, match=r"'upload.bin' is not a readable image: JPEG, PNG, WEBP or BMP"):
        check_image(data, "upload.bin")


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_other_formats_rejected_by_name(fmt):
    with pytest.raises(ImageRejected, match=rf"'anim': format {fmt} not accepted; JPEG, PNG, WEBP or BMP"):
        check_image(_image_bytes(fmt, (32, 32)), "anim")


def test_empty_rejected():
    with pytest.raises(ImageRejected, match=r"'empty.jpg' is empty"):
        check_image(b"", "empty.jpg")


def test_too_many_bytes_rejected_before_parsing(monkeypatch):
    data = _noise_jpeg(64)
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("opened an oversized file"))
    with pytest.raises(ImageRejected, match=rf"'big.jpg' is {len(data):,} bytes: files of at most 1,000 bytes"):
        check_image(data, "big.jpg", ImageLimits(max_bytes=1000))


def test_too_small_and_too_large_sides_rejected():
    with pytest.raises(ImageRejected, match=r"'tiny.png' is 8x8 pixels: sides of at least 16"):
        check_image(_image_bytes("PNG", (8, 8)), "tiny.png")
    with pytest.raises(ImageRejected, match=r"is 64x48 pixels: sides of at most 32"):
        check_image(_image_bytes("PNG", (64, 48)), limits=ImageLimits(max_side=32))


def test_errors_are_input_errors():
    assert issubclass(ImageRejected, InputError) and issubclass(UnsafeArchiveError, InputError)


# ---------------------------------------------------------------------------------------------- member names


@pytest.mark.parametrize("name, clean", [("a.jpg", "a.jpg"), ("dir/sub/a.jpg", "dir/sub/a.jpg"),
                                         ("./dir//a.jpg", "dir/a.jpg"), ("dir/", "dir"), ("...jpg", "...jpg")])
def test_safe_member_name_normalises(name, clean):
    assert safe_member_name(name) == clean


@pytest.mark.parametrize("name, match", [
    ("../evil.txt", r"'\.\./evil\.txt' contains '\.\.'"),
    ("a/../../x", r"contains '\.\.'"),
    ("/etc/passwd", r"'/etc/passwd' is absolute"),
    ("a\\b.jpg", r"contains a backslash"),
    ("C:x", r"'C:x' is absolute or names a drive"),
    ("c:/windows/x", r"names a drive"),
    ("", r"is empty"),
    ("a\x00b.jpg", r"'a\\x00b\.jpg' contains a NUL"),
    ("a\nb.jpg", r"control character"),
    ("./", r"names no file"),
    (None, r"not text"),
])
def test_safe_member_name_rejects(name, match):
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_member_name(name)


# ---------------------------------------------------------------------------------------------- zips


def test_good_zip_with_nested_folders_round_trips(tmp_path):
    jpeg = _image_bytes("JPEG")
    entries = [("top.txt", b"hello"), ("batch/", b""), ("batch/images/", b""), ("batch/images/a.jpg", jpeg),
               ("./batch//b.csv", b"file\nimages/a.jpg\n")]
    expected = {"top.txt": b"hello", "batch/images/a.jpg": jpeg, "batch/b.csv": b"file\nimages/a.jpg\n"}
    data = _zip(entries)
    assert read_zip(data) == expected
    (tmp_path / "batch.zip").write_bytes(data)
    assert read_zip(tmp_path / "batch.zip") == expected


def test_macosx_and_dot_files_skipped():
    entries = [("a.jpg", b"x"), ("__MACOSX/._a.jpg", b"fork"), (".DS_Store", b"ds"), ("dir/.hidden", b"h"),
               ("dir/b.jpg", b"y")]
    assert read_zip(_zip(entries)) == {"a.jpg": b"x", "dir/b.jpg": b"y"}


@pytest.mark.parametrize("name, match", [("../evil.txt", r"contains '\.\.'"), ("/etc/passwd", r"is absolute"),
                                         ("a\\b.jpg", r"backslash"), ("C:x", r"names a drive")])
def test_zip_with_unsafe_member_name_rejected(name, match):
    with pytest.raises(UnsafeArchiveError, match=match):
        read_zip(_zip([("ok.txt", b"fine"), (name, b"evil")]))


def test_symlink_member_rejected():
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(UnsafeArchiveError, match=r"'link.jpg' is a symbolic link"):
        read_zip(_zip([("ok.txt", b"fine"), (link, "/etc/passwd")]))


def test_encrypted_member_rejected():
    data = _patch_single_member(_zip([("secret.jpg", b"x" * 100)]), 6, 8, struct.pack("<H", 0x1))
    with pytest.raises(UnsafeArchiveError, match=r"'secret.jpg' is encrypted"):
        read_zip(data)


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_compression_without_output_bound_rejected(compression):
    with pytest.raises(UnsafeArchiveError, match=r"'a.bin' uses compression method \d+: only stored or deflate"):
        read_zip(_zip([("a.bin", b"\0" * 1000)], compression))


def test_zip_bomb_rejected_before_extraction(monkeypatch):
    bomb = _zip([("ok.txt", b"fine"), ("bomb.bin", bytes(64 * MIB))])
    assert len(bomb) < MIB
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *args, **kwargs: pytest.fail("extracted a member"))
    with pytest.raises(UnsafeArchiveError, match=r"'bomb.bin' is 67,108,864 bytes uncompressed: members of at most "
                                                 r"26,214,400 bytes"):
        read_zip(bomb)


def test_suspicious_compression_ratio_rejected():
    with pytest.raises(UnsafeArchiveError, match=r"'zeros.bin' has a compression ratio of [\d,]+ \(a zip bomb\?\): "
                                                 r"at most 200"):
        read_zip(_zip([("zeros.bin", bytes(4 * MIB))]))


def test_high_ratio_below_one_mib_allowed():
    assert read_zip(_zip([("zeros.bin", bytes(MIB))])) == {"zeros.bin": bytes(MIB)}


def test_declared_total_over_limit_rejected():
    limits = ArchiveLimits(max_total_bytes=2500)
    with pytest.raises(UnsafeArchiveError, match=r"holds 3,000 bytes uncompressed: at most 2,500 bytes in total"):
        read_zip(_zip([("a.bin", b"a" * 1000), ("b.bin", b"b" * 1000), ("c.bin", b"c" * 1000)]), limits)


def test_member_whose_header_lies_about_its_size_rejected():
    honest = _zip([("zeros.bin", bytes(3 * MIB))])
    lying = _patch_single_member(honest, 22, 24, struct.pack("<I", 1000))
    assert zipfile.ZipFile(io.BytesIO(lying)).getinfo("zeros.bin").file_size == 1000
    with pytest.raises(UnsafeArchiveError, match=r"'zeros.bin' is corrupt or unreadable"):
        read_zip(lying)


class _EndlessZeros(io.RawIOBase):
    """Stands in for a decompressor that never stops, whatever the header declared."""

    served = 0

    def readable(self):
        return True

    def read(self, size=-1):
        size = 1 << 30 if size is None or size < 0 else size
        _EndlessZeros.served += size
        return bytes(size)


@pytest.mark.parametrize("limits, match", [
    (ArchiveLimits(max_member_bytes=100_000), r"'a.bin' decompresses to more than 100,000 bytes although its header "
                                              r"declares 100: members of at most 100,000 bytes"),
    (ArchiveLimits(max_total_bytes=3000), r"'a.bin' decompresses to more than 3,000 bytes"),
])
def test_chunked_read_caps_an_endless_member(monkeypatch, limits, match):
    """Even if the decompressor yielded without end, reading stops one chunk past the cap."""
    data = _zip([("a.bin", b"a" * 100), ("b.bin", b"b" * 100)])
    _EndlessZeros.served = 0
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *args, **kwargs: _EndlessZeros())
    with pytest.raises(UnsafeArchiveError, match=match):
        read_zip(data, limits)
    assert _EndlessZeros.served <= 100_000 + 64 * 1024


@pytest.mark.parametrize("first, second", [("a.jpg", "a.jpg"), ("dir/a.jpg", "./dir//a.jpg")])
def test_duplicate_names_rejected(first, second):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns when writing a duplicate name
        data = _zip([(first, b"1"), (second, b"2")])
    with pytest.raises(UnsafeArchiveError, match=r"duplicates 'dir/a.jpg'|duplicates 'a.jpg'"):
        read_zip(data)


def test_file_that_is_also_a_folder_rejected():
    with pytest.raises(UnsafeArchiveError, match=r"'a/b.jpg' lies under 'a', which is also a file"):
        read_zip(_zip([("a", b"file"), ("a/b.jpg", b"x")]))


@pytest.mark.parametrize("data", [b"this is not a zip", b"", _zip([("a.txt", b"x" * 100)])[:40]],
                         ids=["text", "empty", "truncated"])
def test_not_a_zip_rejected(data):
    with pytest.raises(UnsafeArchiveError, match=r"is not a readable zip archive.*a \.zip file is accepted"):
        read_zip(data)


def test_too_many_members_rejected():
    entries = [(f"{index}.txt", b"x") for index in range(4)]
    with pytest.raises(UnsafeArchiveError, match=r"has 4 entries: at most 3 are accepted"):
        read_zip(_zip(entries), ArchiveLimits(max_members=3))


# ---------------------------------------------------------------------------------------------- resolve_inside


@pytest.fixture()
def base(tmp_path):
    folder = tmp_path / "batch"
    (folder / "images").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret")
    return folder


def test_resolve_inside_normal_path(base):
    assert resolve_inside(base, "images/a.jpg") == (base / "images" / "a.jpg").resolve()
    assert resolve_inside(base, "./images//not-yet.jpg") == (base / "images" / "not-yet.jpg").resolve()


def test_resolve_inside_rejects_traversal(base):
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./x' contains '\.\.'"):
        resolve_inside(base, "../x")
    with pytest.raises(UnsafeArchiveError, match=r"is absolute"):
        resolve_inside(base, str(base / "images" / "a.jpg"))


def test_resolve_inside_rejects_symlinks_leading_outside(base, tmp_path):
    (base / "images" / "link").symlink_to(tmp_path / "outside")
    (base / "secret.jpg").symlink_to(tmp_path / "outside" / "secret.txt")
    with pytest.raises(UnsafeArchiveError, match=r"'images/link/secret.txt' leads outside the upload folder"):
        resolve_inside(base, "images/link/secret.txt")
    with pytest.raises(UnsafeArchiveError, match=r"'secret.jpg' leads outside the upload folder"):
        resolve_inside(base, "secret.jpg")


def test_resolve_inside_follows_symlinks_that_stay_inside(base, tmp_path):
    (base / "images" / "a.jpg").write_bytes(b"x")
    (base / "alias.jpg").symlink_to(base / "images" / "a.jpg")
    assert resolve_inside(base, "alias.jpg") == (base / "images" / "a.jpg").resolve()
    (tmp_path / "batch-link").symlink_to(base)
    assert resolve_inside(tmp_path / "batch-link", "images/a.jpg") == (base / "images" / "a.jpg").resolve()


def test_resolve_inside_rejects_symlink_loops_and_the_folder_itself(base):
    (base / "loop-a").symlink_to(base / "loop-b")
    (base / "loop-b").symlink_to(base / "loop-a")
    with pytest.raises(UnsafeArchiveError, match=r"'loop-a' cannot be resolved|'loop-a' leads outside"):
        resolve_inside(base, "loop-a")
    (base / "here").symlink_to(base)
    with pytest.raises(UnsafeArchiveError, match=r"'here' leads outside the upload folder"):
        resolve_inside(base, "here")
