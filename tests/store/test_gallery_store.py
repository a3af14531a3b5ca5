"""The gallery's metadata role (``GalleryStore``) on every store: directories as a tree whose
changes are atomic, images with their tags, listings in the same order, deletions that say
which blobs nothing refers to any more."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import pytest
from PIL import Image as PILImage

from engine.config import TrackingConfig
from engine.errors import InputError, NotFound, StoreError
from engine.gallery import FileBlobStore, Gallery, check_image
from engine.store.base import ImageQuery, ImageRow, NewImage, Store

pytestmark = pytest.mark.anyio

NOW = 1_795_348_800.0


def digest(n: int) -> str:
    return f"{n:064x}"


async def add(store: Store, name: str, *, directory_id: int | None = None, sha: int = 1,
              thumb: int = 2, size: int = 100, at: float = NOW,
              tags: tuple[str, ...] = ("2026-11-22",)) -> ImageRow:
    return await store.add_gallery_image(NewImage(
        name, directory_id, digest(sha), digest(thumb), name, "png", size, 40, 30, at, tags))


async def test_directories_form_a_tree_with_unique_sibling_names(store: Store) -> None:
    top = await store.create_gallery_directory("Top", None, now=NOW)
    child = await store.create_gallery_directory("child", top.id, now=NOW + 1)
    assert await store.gallery_directory(child.id) == (child.id, "child", top.id, NOW + 1)
    with pytest.raises(StoreError, match=r"^a directory named 'child' already exists there$"):
        await store.create_gallery_directory("child", top.id, now=NOW)
    await store.create_gallery_directory("child", None, now=NOW)  # elsewhere: fine
    with pytest.raises(NotFound, match=r"^no directory 999$"):
        await store.create_gallery_directory("x", 999, now=NOW)
    with pytest.raises(NotFound, match=r"^no directory 999$"):
        await store.gallery_directory(999)
    assert [d.name for d in await store.gallery_directories(top.id)] == ["child"]
    assert [d.name for d in await store.gallery_directories()] == ["child", "Top"]


async def test_moves_and_renames_never_make_a_cycle_nor_a_duplicate(store: Store) -> None:
    a = await store.create_gallery_directory("a", None, now=NOW)
    b = await store.create_gallery_directory("b", a.id, now=NOW)
    c = await store.create_gallery_directory("c", b.id, now=NOW)
    for target in (a.id, b.id, c.id):
        with pytest.raises(InputError, match=r"^parent_id: a directory cannot move into itself"):
            await store.update_gallery_directory(a.id, parent_id=target, move=True)
    with pytest.raises(NotFound, match=r"^no directory 999$"):
        await store.update_gallery_directory(999, name="x")
    with pytest.raises(NotFound, match=r"^no directory 999$"):
        await store.update_gallery_directory(c.id, parent_id=999, move=True)
    await store.create_gallery_directory("c", None, now=NOW)
    with pytest.raises(StoreError, match=r"^a directory named 'c' already exists there$"):
        await store.update_gallery_directory(c.id, parent_id=None, move=True)
    moved = await store.update_gallery_directory(c.id, name="up", parent_id=None, move=True)
    assert moved == (c.id, "up", None, NOW)
    assert await store.gallery_directory(c.id) == moved
    renamed = await store.update_gallery_directory(b.id, name="B")  # no move: parent stays
    assert renamed.parent_id == a.id
    assert await store.gallery_directories(b.id) == []


async def _move(store: Store, d: int, into: int, outcomes: list[str]) -> None:
    try:
        await store.update_gallery_directory(d, parent_id=into, move=True)
        outcomes.append("moved")
    except InputError:
        outcomes.append("refused")


async def _create(store: Store, name: str, outcomes: list[str]) -> None:
    try:
        await store.create_gallery_directory(name, None, now=NOW)
        outcomes.append("created")
    except StoreError:
        outcomes.append("taken")


async def test_concurrent_tree_changes_stay_consistent(store: Store) -> None:
    """Two directories moved into each other at once: one move is refused, whatever the
    interleaving; two creations of one name: one is refused."""
    for round_ in range(8):
        a = await store.create_gallery_directory(f"a{round_}", None, now=NOW)
        b = await store.create_gallery_directory(f"b{round_}", None, now=NOW)
        outcomes: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_move, store, a.id, b.id, outcomes)
            tg.start_soon(_move, store, b.id, a.id, outcomes)
            tg.start_soon(_create, store, f"twin{round_}", outcomes)
            tg.start_soon(_create, store, f"twin{round_}", outcomes)
        assert sorted(outcomes) == ["created", "moved", "refused", "taken"]
        after = [await store.gallery_directory(d.id) for d in (a, b)]
        assert None in {d.parent_id for d in after}  # one is still at the root: no cycle


async def test_directory_search_and_order_fold_ascii_only(store: Store) -> None:
    names = ["beta", "Alpha", "alpha", "Émile", "émile", "Zed", "_x", "äpfel"]
    ids = {n: (await store.create_gallery_directory(n, None, now=NOW + i)).id
           for i, n in enumerate(names)}
    by_name = [d.name for d in await store.gallery_directories(sort="name")]
    # A-Z fold to a-z (so "_" sorts before letters); the rest by code point; ties by id
    assert by_name == ["_x", "Alpha", "alpha", "beta", "Zed", "Émile", "äpfel", "émile"]
    assert [d.name for d in await store.gallery_directories(sort="name", desc=True)] == [
        "émile", "äpfel", "Émile", "Zed", "beta", "Alpha", "alpha", "_x"]
    assert [d.name for d in await store.gallery_directories(sort="date", desc=True)][:2] == [
        "äpfel", "_x"]
    assert [d.name for d in await store.gallery_directories(q="ALPH")] == ["Alpha", "alpha"]
    assert [d.name for d in await store.gallery_directories(q="émile")] == ["émile"]
    assert [d.name for d in await store.gallery_directories(q="ÉMILE")] == ["Émile"]
    assert await store.gallery_directories(q="nothing") == []
    # a search looks everywhere, not only at the root
    inner = await store.create_gallery_directory("alphabet", ids["beta"], now=NOW)
    assert inner.id in {d.id for d in await store.gallery_directories(q="alpha")}


async def test_images_keep_their_tags_sorted(store: Store) -> None:
    image = await add(store, "cat.png", tags=("b", "2026-11-22", "Z", "é", "b"))
    assert image.tags == ["2026-11-22", "Z", "b", "é"]
    assert await store.gallery_image(image.id) == image
    assert await store.gallery_image(999) is None
    with pytest.raises(NotFound, match=r"^no directory 999$"):
        await add(store, "x.png", directory_id=999)
    again = await add(store, "copy.png")  # same content
    assert (await store.gallery_image_by_digest(digest(1))) == image
    assert again.id > image.id
    assert await store.gallery_image_by_digest(digest(9)) is None


async def test_update_image_is_all_or_nothing(store: Store) -> None:
    folder = await store.create_gallery_directory("f", None, now=NOW)
    image = await add(store, "a.png", tags=("one", "two"))
    with pytest.raises(NotFound, match=r"^no directory 999$"):
        await store.update_gallery_image(image.id, name="b.png", directory_id=999, move=True,
                                         add_tags=["new"])
    assert await store.gallery_image(image.id) == image
    with pytest.raises(NotFound, match=r"^no image 999$"):
        await store.update_gallery_image(999, name="b.png")
    moved = await store.update_gallery_image(
        image.id, name="b.png", directory_id=folder.id, move=True,
        add_tags=["three", "three", "one"], remove_tags=["two", "absent"])
    assert (moved.name, moved.directory_id, moved.tags) == ("b.png", folder.id,
                                                            ["one", "three"])
    assert moved.url_name == "a.png"  # the URL never changes
    kept = await store.update_gallery_image(image.id, name="c.png")  # no move: stays
    assert kept.directory_id == folder.id
    home = await store.update_gallery_image(image.id, directory_id=None, move=True)
    assert (home.name, home.directory_id) == ("c.png", None)
    both = await store.update_gallery_image(image.id, add_tags=["x"], remove_tags=["x"])
    assert "x" in both.tags  # removed, then added


async def test_listings_filter_and_sort_alike(store: Store) -> None:
    folder = await store.create_gallery_directory("f", None, now=NOW)
    old = (await add(store, "b-old.png", at=NOW - 40 * 86400, size=10, tags=("promo",))).id
    big = (await add(store, "C-big.png", at=NOW - 60, size=900, tags=("Brand",))).id
    new = (await add(store, "a-new.png", at=NOW, size=50, directory_id=folder.id)).id
    accent = (await add(store, "Éclair.png", at=NOW - 1, size=50, tags=("sale",))).id

    async def ids(**kw: object) -> list[int]:
        return [i.id for i in await store.gallery_images(ImageQuery(**kw))]  # type: ignore[arg-type]

    assert await ids() == [new, accent, big, old]
    assert await ids(in_directory=True) == [accent, big, old]
    assert await ids(in_directory=True, directory_id=folder.id) == [new]
    assert await ids(since=NOW - 30 * 86400) == [new, accent, big]
    assert await ids(sort="name", desc=False) == [new, old, big, accent]
    assert await ids(sort="name", desc=True) == [accent, big, old, new]
    assert await ids(sort="size", desc=True) == [big, new, accent, old]  # ties by id
    assert await ids(sort="date", desc=False, limit=2) == [old, big]
    assert await ids(q="BIG") == [big]
    assert await ids(q="bran") == [big]  # a tag, folded
    assert await ids(q="éCLAIR") == []  # É does not fold
    assert await ids(tag="brand") == []  # a tag filter is exact
    assert await ids(tag="promo") == [old]
    assert await ids(q=".png", tag="sale", since=NOW - 10) == [accent]
    [row] = await store.gallery_images(ImageQuery(tag="Brand"))
    assert row == await store.gallery_image(big)


async def test_deletions_name_the_blobs_left_unused(store: Store) -> None:
    top = await store.create_gallery_directory("top", None, now=NOW)
    inner = await store.create_gallery_directory("inner", top.id, now=NOW)
    deep = await add(store, "deep.png", directory_id=inner.id, sha=10, thumb=11)
    await add(store, "shallow.png", directory_id=top.id, sha=12, thumb=13)
    twin = await add(store, "twin.png", sha=10, thumb=11)  # the same blobs, at the root
    only = await add(store, "only.png", sha=20, thumb=21)

    deleted = await store.delete_gallery_directory(top.id)
    assert (deleted.images, deleted.orphans) == (2, frozenset({digest(12), digest(13)}))
    assert await store.gallery_image(deep.id) is None
    with pytest.raises(NotFound, match=f"^no directory {inner.id}$"):
        await store.gallery_directory(inner.id)
    with pytest.raises(NotFound, match=f"^no directory {top.id}$"):
        await store.delete_gallery_directory(top.id)

    gone = await store.delete_gallery_images([twin.id, twin.id, 999, only.id])
    assert (gone.images, gone.orphans) == (
        2, frozenset({digest(10), digest(11), digest(20), digest(21)}))
    assert (await store.delete_gallery_images([])).images == 0
    assert await store.gallery_images(ImageQuery()) == []


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (20, 10), color).save(out, "PNG")
    return out.getvalue()


async def test_the_gallery_runs_on_the_store(store: Store, tmp_path: Path) -> None:
    gallery = Gallery(store, FileBlobStore(tmp_path / "blobs"),
                      TrackingConfig(domain="trk.example.com", scheme="https"))
    data = png((1, 2, 3))
    folder = await gallery.create_directory("Holiday ✓", now=NOW)
    image = await gallery.add_image("My Cat!.png", data, check_image(data), now=NOW,
                                    directory_id=folder.id, tags=[" group-ops "])
    assert image.tags == ["2026-11-22", "group-ops"]
    assert gallery.url(image).endswith(f"/1/{image.id}/{image.sha256[:16]}/My-Cat-.png")
    assert await gallery.resolve_public("1", image.id, image.sha256[:16], "My-Cat-.png")
    with pytest.raises(NotFound):
        await gallery.image(2**64)  # past any database's ids
    assert await gallery.images(q="a\x00", now=NOW) == []
    with pytest.raises(InputError, match="NUL"):
        await gallery.update_image(image.id, add_tags=["a\x00b"])
    assert await gallery.delete_directory(folder.id) == 1
    with pytest.raises(KeyError):
        gallery.data(image)
