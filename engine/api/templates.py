"""``POST /api/v1/templates/preview`` (viewer): a template as a message would carry it,
for the console's editor as the user types.

The template compiles as a mailing's would (the plugins' functions, ``[limits]``); it
renders for profile ``profile_id`` of ``database`` (its fields as ``lead``, its
subscription to ``resource`` as ``subscription``), or with no data when none is given,
with ``content`` as ``{apicontent.*}`` and ``document`` as ``{json.*}``. Where the
resource's links are tracked (``Config.tracking_base``), they are shortened as a run
would shorten them, with sample codes. Then the text is measured as it will be sent:
encoding, length (septets or UTF-16 units), segments, and the characters that forced
UCS-2, at their index in UTF-16 code units (a JavaScript string's). ``too_long``: some
sender of the resource (of any resource when none is given) would refuse it for its
``max_segments``.

The answer is HTTP 200 whether or not the template compiles: ``ok`` says which. An
unknown resource, database or profile is a 404 naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, NamedTuple

import msgspec
from litestar import post
from litestar.params import JSONBody
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.errors import ApiError
from engine.api.mailings import bounded_document
from engine.api.state import MAX_ID, Req, api_state
from engine.core.links import Shortener, find_urls, link_request
from engine.core.prepare import AudienceRow
from engine.core.sms import GSM7_BASIC, GSM7_EXTENSION, measure
from engine.core.templates import Template, refuse_blank
from engine.errors import NotFound, TemplateError
from engine.runner import Herald
from engine.store.models import AudienceSource

__all__ = ["ROUTES", "PreviewBody", "PreviewError", "PreviewFailed", "PreviewLink",
           "PreviewText", "UcsChar", "preview"]

_GSM7: Final = frozenset(GSM7_BASIC + GSM7_EXTENSION)
#: The sample codes' key: a preview's codes are never real links.
_SAMPLE_SECRET: Final = b"herald console preview sample codes"
#: The seq a sample code is made for.
_SAMPLE_SEQ: Final = 1
_decode_fields = msgspec.json.Decoder(dict[str, Any]).decode

Name = Annotated[str, Meta(min_length=1, max_length=200)]


class PreviewBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A template, and optionally who it is for."""

    template: Annotated[str, Meta(max_length=100_000)]
    resource: Name | None = None
    database: Name | None = None
    profile_id: Annotated[int, Meta(ge=1, le=MAX_ID)] | None = None
    #: Rendered as ``{apicontent.*}`` (a trigger call's content).
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Rendered as ``{json.*}`` (a mailing's document).
    document: dict[str, Any] = msgspec.field(default_factory=dict)


class UcsChar(msgspec.Struct, kw_only=True):
    #: Where it is in ``text``, in UTF-16 code units.
    index: int
    char: str


class PreviewLink(msgspec.Struct, kw_only=True):
    url: str
    short: str


class PreviewText(msgspec.Struct, kw_only=True):
    """The template compiled: the text for the profile and how it will be sent."""

    ok: bool = True
    text: str
    encoding: str
    length: int
    segments: int
    too_long: bool
    ucs2_chars: list[UcsChar]
    links: list[PreviewLink]


class PreviewError(msgspec.Struct, kw_only=True):
    message: str
    #: 1-based.
    line: int
    col: int


class PreviewFailed(msgspec.Struct, kw_only=True):
    """The template does not compile."""

    ok: bool = False
    error: PreviewError


class _Link(NamedTuple):
    """A sample link row (``engine.core.links.LinkTarget``)."""

    id: int
    url: str | None


def ucs2_chars(text: str) -> list[UcsChar]:
    """The characters of ``text`` outside GSM-7, at their UTF-16 index."""
    out = []
    units = 0
    for char in text:
        if char not in _GSM7:
            out.append(UcsChar(index=units, char=char))
        units += 2 if ord(char) > 0xFFFF else 1
    return out


def _sample_shortener(template: Template, base: str, static: str) -> Shortener:
    """The shortener a run of ``template`` would have, on sample link rows."""
    urls, slots = link_request(template, base)
    rows = [_Link(i + 1, url) for i, url in enumerate(urls)]
    rows += [_Link(len(rows) + k + 1, None) for k in range(slots)]
    return Shortener.of(template, base=base, secret=_SAMPLE_SECRET, links=rows,
                        static_unsubscribe=static)


def _links(shortener: Shortener, text: str) -> list[PreviewLink]:
    """Each URL of ``text`` that the shortener rewrites, and what it becomes."""
    urls = list(dict.fromkeys(text[a:b] for a, b in find_urls(text)))
    if not urls:
        return []
    # the URLs alone, in the text's order: the same slots and codes as in the text
    shorts = shortener.shorten(" ".join(urls), _SAMPLE_SEQ, []).split(" ")
    if len(shorts) != len(urls):
        return []
    return [PreviewLink(url=u, short=s) for u, s in zip(urls, shorts, strict=True) if u != s]


async def _row(herald: Herald, body: PreviewBody, resource_id: int) -> AudienceRow:
    """The audience row of the profile to render for (profile 0, no data, if none)."""
    store = herald.store
    database_id: int | None = None
    if body.database is not None:
        database_id = await store.database_id(body.database)
    if body.profile_id is None:
        return AudienceRow(0, None, None, None)
    if database_id is None:
        found = await store.profile_phone(body.profile_id)
        if found is None:
            raise ApiError(404, f"no profile {body.profile_id}", "profile_id")
        database_id = found[0]
    rows = await store.audience_rows(AudienceSource("list", database_id), resource_id,
                                     [body.profile_id])
    if not rows:
        raise ApiError(404, f"no profile {body.profile_id} in database"
                       f" {body.database or database_id}", "profile_id")
    return AudienceRow(*rows[0])


async def preview(herald: Herald, body: PreviewBody) -> PreviewText | PreviewFailed:
    """The preview of ``body``'s template (see the module docstring)."""
    config = herald.config
    resource = None
    if body.resource is not None:
        resource = config.resources.get(body.resource)
        if resource is None:
            raise ApiError(404, f"no resource named {body.resource!r}", "resource")
    try:
        template = refuse_blank(await herald.compile_async(body.template))
    except TemplateError as err:
        return PreviewFailed(error=PreviewError(
            message=err.message, line=max(err.line, 1), col=max(err.col, 1)))
    resource_id = await herald.store.resource_id(body.resource) if body.resource else 0
    row = await _row(herald, body, resource_id)
    static = (resource.unsubscribe_url if resource is not None else None) or ""
    ctx: dict[str, Any] = {
        "mailing": {"id": 0, "name": ""},
        "resource": {"id": resource_id, "name": body.resource or "",
                     "unsubscribe_url": static},
        "json": body.document, "apicontent": body.content,
    }
    # as engine.core.prepare.Preparer.render builds it for an audience row
    lead = _decode_fields(row.fields) if row.fields else {}
    lead["_id"] = row.profile_id
    sub = _decode_fields(row.sub_fields) if row.sub_fields else {}
    sub["phone"] = row.phone
    sub.setdefault("resource_id", resource_id)
    ctx["lead"], ctx["subscription"] = lead, sub
    base = config.tracking_base(body.resource or "")
    links: list[PreviewLink] = []
    if base is None:
        text = template.render(ctx)
    else:
        shortener = _sample_shortener(template, base, static)
        ctx["resource"].update(shortener.resource_fields)
        rendered = template.render(ctx)
        links = _links(shortener, rendered)
        text = shortener.shorten(rendered, _SAMPLE_SEQ, [])
    info = measure(text)
    if resource is not None and resource.virtual_sender in config.virtual_senders:
        names = {t.sender for rule in config.virtual_senders[resource.virtual_sender].rules
                 for t in rule.senders}
    else:
        names = set(config.senders)
    caps = [config.senders[n].max_segments for n in names if n in config.senders]
    return PreviewText(
        text=text, encoding=info.encoding, length=info.length, segments=info.segments,
        too_long=any(0 < cap < info.segments for cap in caps),
        ucs2_chars=ucs2_chars(text) if info.encoding == "ucs2" else [], links=links)


@post("/templates/preview", **guarded("viewer", 400, 404, 413, bounds=bounded_document),
      status_code=200, tags=["mailings"], summary="Preview a template")
async def preview_template(request: Req,
                           data: JSONBody[PreviewBody]) -> PreviewText | PreviewFailed:
    """The rendered text for a profile, its encoding, length and segments, the characters
    that forced UCS-2, its links shortened, or the compile error at its line and column
    (HTTP 200 either way)."""
    try:
        return await preview(api_state(request).herald, data)
    except NotFound as err:
        raise ApiError(404, str(err), "database") from None


ROUTES = [preview_template]
