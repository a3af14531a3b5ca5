"""``herald gallery upload|ls|mkdir|mv|rename|rm|tag|localize``: the gallery from the shell,
straight on the workspace's store (no server needed)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.workspace import print_json, using
from engine.errors import InputError

__all__ = ["add_gallery_parsers"]


def _image_json(gallery: Any, image: Any) -> dict[str, Any]:
    return {"id": image.id, "name": image.name, "url": gallery.url(image), "size": image.size,
            "width": image.width, "height": image.height, "tags": image.tags,
            "directory_id": image.directory_id}


def _target(text: str) -> int | None:
    if text == "root":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("expected a directory id or 'root'")
    return int(text)


def cmd_upload(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery
    from engine.gallery.images import MAX_IMAGE_BYTES, Decoder

    files: list[tuple[Path, bytes | OSError]] = []
    for file in args.files:
        path = Path(file)
        try:
            with path.open("rb") as f:
                files.append((path, f.read(MAX_IMAGE_BYTES + 1)))
        except OSError as err:
            files.append((path, err))

    async def go(herald: Any) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        gallery = open_gallery(herald)
        decoder = Decoder(max_pixels=herald.config.gallery.max_pixels,
                          max_concurrent=herald.config.gallery.max_concurrent_decodes)
        tags = [*args.tag, *([f"group-{args.group}"] if args.group else [])]
        uploaded, rejected = [], []
        for path, data in files:
            try:
                if isinstance(data, OSError):
                    raise InputError(f"cannot read it: {data.strerror or data}")
                info = await decoder.check(data)
                image = await gallery.add_image(path.name, data, info, now=time.time(),
                                                directory_id=args.dir, tags=tags)
            except InputError as err:
                rejected.append({"name": str(path), "error": str(err)})
                continue
            uploaded.append(_image_json(gallery, image))
        return uploaded, rejected

    uploaded, rejected = using(args, go)
    if args.json:
        print_json({"uploaded": uploaded, "rejected": rejected})
    else:
        for item in uploaded:
            print(f"{item['id']}\t{item['url']}")
        for item in rejected:
            print(f"{item['name']}: {item['error']}", file=sys.stderr)
    return 1 if rejected else 0


def cmd_ls(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery

    async def go(herald: Any) -> dict[str, Any]:
        gallery = open_gallery(herald)
        desc = None if args.order is None else args.order == "desc"
        images = await gallery.images(directory_id=args.dir, q=args.q, tag=args.tag,
                                      recent=args.recent, sort=args.sort, desc=desc,
                                      now=time.time())
        dirs = [] if args.tag or args.recent else await gallery.directories(
            args.dir, q=args.q, sort=args.sort, desc=bool(desc))
        return {"images": [_image_json(gallery, i) for i in images],
                "directories": [{"id": d.id, "name": d.name, "parent_id": d.parent_id}
                                for d in dirs]}

    listing = using(args, go)
    if args.json:
        print_json(listing)
        return 0
    for d in listing["directories"]:
        print(f"d{d['id']}\t{d['name']}/")
    for i in listing["images"]:
        print(f"{i['id']}\t{i['name']}\t{i['size']}\t{i['width']}x{i['height']}\t{i['url']}")
    return 0


def cmd_mkdir(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery

    async def go(herald: Any) -> int:
        directory = await open_gallery(herald).create_directory(args.name, args.parent,
                                                                now=time.time())
        return directory.id

    print(using(args, go))
    return 0


def cmd_mv(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery

    async def go(herald: Any) -> None:
        gallery = open_gallery(herald)
        for item in args.ids:
            if args.directories:
                await gallery.update_directory(item, parent_id=args.to, move=True)
            else:
                await gallery.update_image(item, directory_id=args.to, move=True)

    using(args, go)
    return 0


def cmd_rename(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery

    async def go(herald: Any) -> None:
        gallery = open_gallery(herald)
        if args.directory:
            await gallery.update_directory(args.id, name=args.name)
        else:
            await gallery.update_image(args.id, name=args.name)

    using(args, go)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery

    async def go(herald: Any) -> int:
        gallery = open_gallery(herald)
        if args.directories:
            return sum([await gallery.delete_directory(d) for d in args.ids])
        return await gallery.delete_images(args.ids)

    print(f"{using(args, go)} images deleted")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery

    async def go(herald: Any) -> list[str]:
        image = await open_gallery(herald).update_image(args.id, add_tags=args.add,
                                                        remove_tags=args.remove)
        return image.tags

    print(" ".join(using(args, go)))
    return 0


def cmd_localize(args: argparse.Namespace) -> int:
    from engine.gallery import open_gallery
    from engine.gallery.fetch import SafeFetcher
    from engine.gallery.images import Decoder
    from engine.gallery.localize import LocalizeResult, localize

    template = Path(args.template).read_text(encoding="utf-8")

    async def go(herald: Any) -> LocalizeResult:
        config = herald.config.gallery
        decoder = Decoder(max_pixels=config.max_pixels,
                          max_concurrent=config.max_concurrent_decodes)
        async with SafeFetcher(config.allow_fetch_from) as fetcher:
            return await localize(template, open_gallery(herald), fetcher, decoder,
                                  now=time.time(), fetch_limit=config.fetch_timeout,
                                  time_limit=config.localize_timeout,
                                  max_urls=config.localize_max_urls, directory_id=args.dir)

    result = using(args, go)
    for error in result.errors:
        print(f"{error.url}: {error.error}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(result.template, encoding="utf-8")
    else:
        sys.stdout.write(result.template)
    return 1 if result.errors else 0


def add_gallery_parsers(sub: Any) -> None:
    p = sub.add_parser("gallery", help="images served on the tracking domain")
    gsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pp = gsub.add_parser("upload", help="add JPEG, PNG or GIF files (2 MB each at most)")
    pp.add_argument("files", nargs="+", metavar="FILE")
    pp.add_argument("--dir", type=_target, default=None, help="directory id (default: root)")
    pp.add_argument("--tag", action="append", default=[], help="a tag (repeatable)")
    pp.add_argument("--group", help="tag the images group-GROUP")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_upload)
    pp = gsub.add_parser("ls", help="a directory's contents, or search")
    pp.add_argument("--dir", type=_target, default=None)
    pp.add_argument("-q", help="search image and directory names and tags")
    pp.add_argument("--tag")
    pp.add_argument("--recent", action="store_true", help="added in the last 30 days")
    pp.add_argument("--sort", choices=["date", "name", "size"], default="date")
    pp.add_argument("--order", choices=["asc", "desc"])
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_ls)
    pp = gsub.add_parser("mkdir", help="create a directory; prints its id")
    pp.add_argument("name")
    pp.add_argument("--parent", type=_target, default=None)
    pp.set_defaults(func=cmd_mkdir)
    pp = gsub.add_parser("mv", help="move images (or directories) into a directory")
    pp.add_argument("ids", nargs="+", type=int, metavar="ID")
    pp.add_argument("--to", type=_target, required=True, help="directory id or 'root'")
    pp.add_argument("--directories", action="store_true", help="the ids are directories")
    pp.set_defaults(func=cmd_mv)
    pp = gsub.add_parser("rename", help="rename an image (its URL stays) or a directory")
    pp.add_argument("id", type=int)
    pp.add_argument("name")
    pp.add_argument("--directory", action="store_true")
    pp.set_defaults(func=cmd_rename)
    pp = gsub.add_parser("rm", help="delete images, or directories with their contents")
    pp.add_argument("ids", nargs="+", type=int, metavar="ID")
    pp.add_argument("--directories", action="store_true")
    pp.set_defaults(func=cmd_rm)
    pp = gsub.add_parser("tag", help="add and remove an image's tags")
    pp.add_argument("id", type=int)
    pp.add_argument("--add", action="append", default=[])
    pp.add_argument("--remove", action="append", default=[])
    pp.set_defaults(func=cmd_tag)
    pp = gsub.add_parser("localize", help="download a template's external images into the"
                         " gallery and print it with their tracking URLs")
    pp.add_argument("template", help="a template file (HTML or SMS text)")
    pp.add_argument("-o", "--output", help="write the result here instead of stdout")
    pp.add_argument("--dir", type=_target, default=None)
    pp.set_defaults(func=cmd_localize)
