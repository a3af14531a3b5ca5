"""``herald gallery ...`` on a workspace: upload with refusals, ls, mkdir, mv, rename, tag,
rm. (The parser is built here; ``engine/cli.py`` registers the same one.)"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from engine.cli.gallery import add_gallery_parsers
from engine.testing import write_config


def run(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="herald")
    parser.add_argument("--config")
    add_gallery_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--config", str(config), "gallery", *argv])
    code: int = args.func(args)
    return code


def test_gallery_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, driver="null",
                          extra='\n[tracking]\ndomain = "trk.example.com"\n')
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8), (1, 2, 3)).save(out, "GIF")
    (tmp_path / "a.gif").write_bytes(out.getvalue())
    (tmp_path / "fake.png").write_text("<html>not an image</html>")

    assert run(config, "upload", str(tmp_path / "a.gif"), str(tmp_path / "fake.png"),
               "--group", "ops", "--json") == 1
    body = json.loads(capsys.readouterr().out)
    [image] = body["uploaded"]
    assert body["rejected"][0]["name"].endswith("fake.png")
    assert "group-ops" in image["tags"] and image["url"].endswith("/a.gif")

    assert run(config, "mkdir", "Holiday ✓") == 0
    folder = capsys.readouterr().out.strip()
    assert run(config, "mv", str(image["id"]), "--to", folder) == 0
    assert run(config, "rename", str(image["id"]), "b.gif") == 0
    assert run(config, "tag", str(image["id"]), "--add", "promo") == 0
    assert "promo" in capsys.readouterr().out
    assert run(config, "ls", "--dir", folder, "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)["images"]
    assert (listed["name"], listed["url"]) == ("b.gif", image["url"])
    assert run(config, "rm", folder, "--directories") == 0
    assert "1 images deleted" in capsys.readouterr().out
    assert run(config, "ls", "--json", "--tag", "promo") == 0
    assert json.loads(capsys.readouterr().out)["images"] == []
