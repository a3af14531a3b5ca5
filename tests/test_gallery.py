"""The gallery's core: images checked by their bytes, content-addressed blobs, directories
as a tree, tags, browsing and the URLs that never change."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

from engine.config import TrackingConfig
from engine.errors import InputError, NotFound, StoreError
from engine.gallery import MAX_IMAGE_BYTES, FileBlobStore, Gallery, check_image
from engine.store.open import open_store

pytestmark = pytest.mark.anyio

NOW = 1_795_348_800.0  # 2026-11-22 12:00 UTC


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30),
                color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


@pytest.fixture
async def gallery(tmp_path: Path) -> AsyncIterator[Gallery]:
    store = await open_store(str(tmp_path / "herald.db"))
    try:
        yield Gallery(store, FileBlobStore(tmp_path / "blobs"),
                      TrackingConfig(domain="trk.example.com", scheme="https"))
    finally:
        await store.aclose()


async def add(gallery: Gallery, name: str = "cat.png", data: bytes | None = None,
              now: float = NOW, **kw: object) -> int:
    data = data or image_bytes()
    image = await gallery.add_image(name, data, check_image(data), now=now, **kw)  # type: ignore[arg-type]
    return image.id


def test_formats_are_judged_by_content() -> None:
    for fmt, name in (("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif")):
        info = check_image(image_bytes(fmt))
        assert (info.format, info.width, info.height) == (name, 40, 30)
        assert PILImage.open(io.BytesIO(info.thumbnail)).size[0] <= 256
    with pytest.raises(InputError, match="not a JPEG, PNG or GIF"):
        check_image(b"<html><script>alert(1)</script></html>")  # say, uploaded as x.png
    with pytest.raises(InputError, match="damaged"):
        check_image(image_bytes()[:60])


def test_two_megabytes_and_one_byte_is_refused() -> None:
    png = image_bytes()
    at_limit = png + b"\0" * (MAX_IMAGE_BYTES - len(png))
    assert check_image(at_limit).format == "png"  # trailing bytes after IEND are tolerated
    with pytest.raises(InputError, match="over the limit"):
        check_image(at_limit + b"\0")


async def test_upload_tags_url_and_blob(gallery: Gallery, tmp_path: Path) -> None:
    image = await gallery.image(await add(gallery, "My Cat!.png", tags=["group-sales"]))
    assert image.tags == ["2026-11-22", "group-sales"]
    assert gallery.url(image) == (
        f"https://trk.example.com/1/{image.id}/{image.sha256[:16]}/My-Cat-.png")
    assert gallery.data(image) == image_bytes()
    assert (tmp_path / "blobs" / image.sha256[:2] / image.sha256[2:4] / image.sha256).exists()


async def test_rename_and_move_keep_the_url(gallery: Gallery) -> None:
    image_id = await add(gallery, "a.png")
    url = gallery.url(await gallery.image(image_id))
    folder = await gallery.create_directory("Folder", now=NOW)
    moved = await gallery.update_image(image_id, name="renamed.png", directory_id=folder.id,
                                       move=True)
    assert (moved.name, moved.directory_id) == ("renamed.png", folder.id)
    assert gallery.url(moved) == url
    found = await gallery.resolve_public("1", image_id, moved.sha256[:16], "a.png")
    assert found.id == image_id
    with pytest.raises(NotFound):
        await gallery.resolve_public("1", image_id, moved.sha256[:16], "renamed.png")


async def test_tags_add_remove_and_search(gallery: Gallery) -> None:
    a = await add(gallery, "summer-sale.png")
    b = await add(gallery, "logo.png", data=image_bytes(color=(0, 0, 255)))
    await gallery.update_image(b, add_tags=["brand", "blue"])
    await gallery.update_image(b, remove_tags=["blue"])
    assert (await gallery.image(b)).tags == ["2026-11-22", "brand"]
    assert [i.id for i in await gallery.images(tag="brand", now=NOW)] == [b]
    assert [i.id for i in await gallery.images(q="SALE", now=NOW)] == [a]
    assert [i.id for i in await gallery.images(q="bran", now=NOW)] == [b]


async def test_directories_nest_rename_and_never_move_into_a_descendant(
        gallery: Gallery) -> None:
    parent = await gallery.create_directory("Parent / «any» characters", now=NOW)
    child = await gallery.create_directory("child", parent.id, now=NOW)
    grandchild = await gallery.create_directory("grandchild", child.id, now=NOW)
    for target in (parent.id, child.id, grandchild.id):
        with pytest.raises(InputError, match="into itself or a directory inside it"):
            await gallery.update_directory(parent.id, parent_id=target, move=True)
    with pytest.raises(StoreError, match="already exists"):
        await gallery.create_directory("child", parent.id, now=NOW)
    await gallery.create_directory("child", now=NOW)  # the same name elsewhere is fine
    with pytest.raises(InputError, match="1 to 244"):
        await gallery.create_directory("x" * 245, now=NOW)
    await gallery.create_directory("x" * 244, now=NOW)
    moved = await gallery.update_directory(grandchild.id, name="up", parent_id=None,
                                           move=True)
    assert (moved.name, moved.parent_id) == ("up", None)
    assert [d.name for d in await gallery.directories(child.id)] == []


async def test_deleting_a_directory_deletes_everything_inside(gallery: Gallery,
                                                              tmp_path: Path) -> None:
    top = await gallery.create_directory("top", now=NOW)
    inner = await gallery.create_directory("inner", top.id, now=NOW)
    kept = await add(gallery, "kept.png")
    deep = await add(gallery, "deep.png", data=image_bytes(color=(1, 2, 3)),
                     directory_id=inner.id)
    sha = (await gallery.image(deep)).sha256
    assert await gallery.delete_directory(top.id) == 1
    with pytest.raises(NotFound):
        await gallery.image(deep)
    with pytest.raises(NotFound):
        await gallery.directory(inner.id)
    assert await gallery.image(kept)
    assert not (tmp_path / "blobs" / sha[:2] / sha[2:4] / sha).exists()


async def test_shared_blob_survives_until_the_last_image_goes(gallery: Gallery) -> None:
    a, b = await add(gallery, "a.png"), await add(gallery, "b.png")
    image = await gallery.image(a)
    assert await gallery.delete_images([a]) == 1
    assert gallery.data(await gallery.image(b)) == gallery.data(image)
    await gallery.delete_images([b])
    with pytest.raises(KeyError):
        gallery.data(image)


async def test_browse_recent_directory_and_sorts(gallery: Gallery) -> None:
    folder = await gallery.create_directory("f", now=NOW)
    old = await add(gallery, "b-old.png", now=NOW - 40 * 86400)
    big = await add(gallery, "c-big.png", data=image_bytes(size=(300, 300)), now=NOW - 60)
    new = await add(gallery, "a-new.png", data=image_bytes(color=(9, 9, 9)), now=NOW,
                    directory_id=folder.id)
    ids = lambda images: [i.id for i in images]  # noqa: E731
    assert ids(await gallery.images(recent=True, now=NOW)) == [new, big]
    assert ids(await gallery.images(now=NOW)) == [big, old]  # the root's own images
    assert ids(await gallery.images(directory_id=folder.id, now=NOW)) == [new]
    assert ids(await gallery.images(everywhere=True, sort="name", now=NOW)) == [new, old, big]
    assert ids(await gallery.images(everywhere=True, sort="size", now=NOW))[0] == big
    assert ids(await gallery.images(everywhere=True, sort="date", desc=False,
                                    now=NOW)) == [
        old, big, new]


def test_blob_keys_cannot_escape_the_store(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    (tmp_path / "secret").write_text("x")
    for key in ("../secret", "../../secret", "/etc/passwd", "A" * 64):
        with pytest.raises(KeyError):
            blobs.get(key)


def test_tracking_and_gallery_config(tmp_path: Path) -> None:
    from engine.config import parse_config
    from engine.errors import ConfigError

    raw = {"tracking": {"domain": "trk.example.com", "scheme": "http", "account": "7"},
           "gallery": {"storage": "img/", "allow_fetch_from": ["127.0.0.1"]}}
    config = parse_config(raw, drivers={})
    assert (config.tracking.scheme, config.tracking.account) == ("http", "7")
    assert config.gallery.allow_fetch_from == ["127.0.0.1"]
    assert parse_config({}, drivers={}).tracking.account == "1"
    with pytest.raises(ConfigError) as err:
        parse_config({"tracking": {"scheme": "ftp"}, "gallery": {"storag": "x"}}, drivers={})
    assert {p.path for p in err.value.problems} == {"tracking.scheme", "gallery.storag"}


async def test_own_urls_are_recognised(gallery: Gallery) -> None:
    assert gallery.is_own_url("https://trk.example.com/1/5/abc/x.png")
    assert not gallery.is_own_url("https://evil.example/1/?https://trk.example.com/1/")
    assert not gallery.is_own_url("https://trk.example.com/2/5/abc/x.png")
