"""Issue 20, part 1: a hostile template posted by a sender neither stalls the server's loop
nor takes its memory, whatever its shape; past a ``[limits]`` bound the answer names it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from engine.testing import in_workspace, write_config
from tests.security.harness import HostileApi, hostile_api

SIZE = 90_000  # under the route's 100 000 characters and [limits] template_bytes


def _repeat(unit: str, head: str = "", tail: str = "") -> str:
    return head + unit * ((SIZE - len(head) - len(tail)) // len(unit)) + tail


def _nested(depth: int) -> str:
    opening = "".join(
        "{if lead.a}" if d % 2 else f"{{for x{d} in json.items}}{{x{d}.name}}" for d in range(depth)
    )
    return _repeat(opening + "{lead.b}" + "{end}" * depth)


#: shape -> (template, the bound the answer names, or None when it is within bounds)
HOSTILE = {
    "one-long-path": (_repeat(".a", "{lead", "}"), "template_path_depth"),
    "loop-path": (_repeat("[0]", "{for x in json.l}{x", "}{end}"), "template_path_depth"),
    "many-variables": ("".join(f"{{lead.v{i}}}" for i in range(8_000)), "template_variables"),
    "deep-blocks": (_repeat("{if lead.a}"), "16 levels"),
    "nested-16": (_nested(16), None),
    "max-in-bounds": ("".join(f"{{lead.v{i}{'.a' * 30}}}" for i in range(1_000)), None),
    "elif-chain": (_repeat('{elif lead.a equal "1"}1', "{if lead.b}b", "{end}"), None),
    "many-urls": (_repeat("https://example.com/p/1 "), None),
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileApi]:
    config = write_config(tmp_path_factory.mktemp("hostile"), driver="null")
    # the mailings' audience
    in_workspace(config, lambda store: store.database_id("main", create=True))
    with hostile_api(config) as api:
        yield api


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_a_hostile_template_neither_stalls_the_loop_nor_keeps_memory(
    api: HostileApi, shape: str
) -> None:
    template, bound = HOSTILE[shape]
    assert len(template) <= 100_000
    token = api.token("sender")
    body = {"name": f"hostile {shape}", "kind": "broadcast", "resource": "news",
            "database": "main", "template": template}
    with api.watch() as watch:
        answer = httpx.post(f"{api.base}/api/v1/mailings", headers=api.auth(token),
                            json=body, timeout=60)
    if bound is None:
        assert answer.status_code == 201, answer.text[:500]
    else:
        assert 400 <= answer.status_code < 500, answer.text[:500]
        assert bound in answer.text
    assert watch.stall < 0.1, f"the loop stalled {watch.stall:.3f}s"
    assert watch.rss_growth < 100e6
    assert watch.peak_growth < 300e6
