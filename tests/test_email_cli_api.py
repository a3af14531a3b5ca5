"""Email mailings created by ``herald mailing create`` and ``POST /api/v1/mailings``: an
email resource's mailing takes a ``subject`` (required), its HTML as the template and an
optional ``text`` version, all compile-checked at creation, each refusal naming its field;
an SMS resource's refuses them. Started, the mailing reaches an SMTP sink on loopback
(``tests.fakes.smtp``) with each recipient's subject."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from engine.api import TokenStore, create_app
from engine.cli import main
from engine.service import MailingService
from engine.store.base import ImportRecord, Store
from engine.testing import FakeGateway, in_workspace, write_config
from tests.fakes.smtp import Received, Sink

PEOPLE = 6
EMAILS = [f"reader{i}@Example.ORG" for i in range(PEOPLE)]
PHONES = [f"+4479111234{i:02d}" for i in range(PEOPLE)]

#: An smtp gateway on the sink, its sender, and an email resource ``letters``.
EMAIL = """
[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
timeout = 10.0

[senders.news_mail]
gateway = "mail"
from = "Herald News <news@example.com>"
reply_to = "help@example.com"

[virtual_senders.mail]
rules = [{{ senders = [{{ sender = "news_mail" }}] }}]

[resources.letters]
channel = "email"
virtual_sender = "mail"
"""

HTML = ('<html><body><p>Hello {lead._fname}!</p>'
        '<p><a href="https://shop.example.com/sale">Our sale</a></p></body></html>')
SUBJECT = "Привет, {lead._fname} 🎉"


def _message(r: Received) -> EmailMessage:
    msg = email.message_from_bytes(r.content, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def by_recipient(sink: Sink) -> dict[str, EmailMessage]:
    return {r.rcpt_tos[0]: _message(r) for r in sink.received}


def fname(address: str) -> str:
    """The ``_fname`` each address's profile has: P0 for reader0@example.org..."""
    return "P" + address.removeprefix("reader").partition("@")[0]


async def add_readers(store: Store) -> None:
    """Database ``main``: a profile per address of EMAILS subscribed to ``letters``, and
    one per phone of PHONES subscribed to ``news`` (SMS)."""
    db = await store.database_id("main", create=True)
    await store.import_profiles(
        db, [ImportRecord(None, None, e, {"_fname": fname(e.lower())}) for e in EMAILS],
        matching="email", resource_id=await store.resource_id("letters"), channel="email")
    await store.import_profiles(
        db, [ImportRecord(None, p, None, {"_fname": f"S{i}"}) for i, p in enumerate(PHONES)],
        matching="phone", resource_id=await store.resource_id("news"))


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


# -- the CLI -----------------------------------------------------------------------------


class Cli:
    """``herald --config WS/herald.toml ...`` in this process: (exit code, out, err)."""

    def __init__(self, ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.ws = ws
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--config", str(self.ws / "herald.toml"), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, (args, out, err)
        return out

    def create(self, *args: str) -> tuple[int, str, str]:
        return self("mailing", "create", "--name", "m", "--kind", "broadcast",
                    "--database", "main", *args)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        sink: Sink) -> Cli:
    """A workspace with an SMS resource ``news`` (its gateway writes ``sent.jsonl``) and an
    email resource ``letters`` on the sink; readers of both; templates as files."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, driver="file", extra=EMAIL.format(port=sink.port))
    in_workspace(config, add_readers)
    (tmp_path / "body.html").write_text(HTML + "\n", encoding="utf-8")
    (tmp_path / "b.html").write_text(HTML.replace("Hello", "Howdy") + "\n", encoding="utf-8")
    (tmp_path / "body.txt").write_text("Hello {lead._fname}, see the sale.\n",
                                       encoding="utf-8")
    (tmp_path / "bad.txt").write_text("Hello {lead._fname\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("A for {lead._fname}\n", encoding="utf-8")
    return Cli(tmp_path, capsys)


def test_cli_creates_an_email_mailing_and_start_sends_it(cli: Cli, sink: Sink) -> None:
    code, out, err = cli.create("--resource", "letters", "--template", "body.html",
                                "--subject", SUBJECT, "--text", "body.txt")
    assert code == 0, err
    mailing_id = int(out)
    shown = json.loads(cli.ok("mailing", "show", str(mailing_id), "--json"))
    assert shown["options"]["subject"] == SUBJECT
    assert shown["options"]["text"] == "Hello {lead._fname}, see the sale."
    assert sink.received == []  # created, not sent
    (log,) = json.loads(cli.ok("mailing", "start", str(mailing_id), "--json"))
    assert (log["status"], log["sent"], log["failed"]) == ("finished", PEOPLE, 0)
    got = by_recipient(sink)
    assert sorted(got) == sorted(e.replace("Example.ORG", "example.org") for e in EMAILS)
    for address, msg in got.items():
        assert msg["Subject"] == f"Привет, {fname(address)} 🎉"
        assert msg["From"] == "Herald News <news@example.com>"
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        assert text is not None and html is not None
        assert text.get_content().strip() == f"Hello {fname(address)}, see the sale."
        assert f"Hello {fname(address)}!" in html.get_content()
    assert not (cli.ws / "sent.jsonl").exists()  # no SMS


def test_a_profiles_markup_reaches_the_html_escaped_and_the_text_as_it_is(
        cli: Cli, sink: Sink) -> None:
    """A name with markup in it cannot break or add to the HTML a reader sees; the
    subject and the text version, plain text, carry it as written."""
    name = '<b>Tom & "J"</b>'

    async def add_tom(store: Store) -> None:
        await store.import_profiles(
            await store.database_id("main"), [ImportRecord(None, None, "tom@example.org",
                                                           {"_fname": name})],
            matching="email", resource_id=await store.resource_id("letters"), channel="email")

    in_workspace(cli.ws / "herald.toml", add_tom)
    code, out, err = cli.create("--resource", "letters", "--template", "body.html",
                                "--subject", SUBJECT, "--text", "body.txt")
    assert code == 0, err
    cli.ok("mailing", "start", out.strip(), "--json")
    msg = by_recipient(sink)["tom@example.org"]
    html, text = msg.get_body(("html",)), msg.get_body(("plain",))
    assert html is not None and text is not None
    assert "Hello &lt;b&gt;Tom &amp; &quot;J&quot;&lt;/b&gt;!" in html.get_content()
    assert text.get_content().strip() == f"Hello {name}, see the sale."
    assert msg["Subject"] == f"Привет, {name} 🎉"


def test_cli_multivariate_email_variants_share_the_subject(cli: Cli, sink: Sink) -> None:
    code, out, err = cli("mailing", "create", "--name", "ab", "--kind", "multivariate",
                         "--resource", "letters", "--database", "main",
                         "--template", "body.html", "--template", "b.html",
                         "--subject", "Sale for {lead._fname}", "--test-share", "100")
    assert code == 0, err
    cli.ok("mailing", "start", out.strip(), "--json")
    got = by_recipient(sink)
    assert len(got) == PEOPLE == len(sink.received)  # each reader one variant
    greetings = set()
    for address, msg in got.items():
        assert msg["Subject"] == f"Sale for {fname(address)}"
        html = msg.get_body(("html",))
        assert html is not None
        greetings.add(html.get_content().split("<p>")[1].split()[0])
    assert greetings == {"Hello", "Howdy"}


@pytest.mark.parametrize(("args", "said"), [
    pytest.param(("--resource", "letters", "--template", "body.html"),
                 "--subject: resource 'letters' sends email", id="email-without-subject"),
    pytest.param(("--resource", "news", "--template", "a.txt", "--subject", "Hi"),
                 "--subject: resource 'news' sends SMS", id="sms-with-subject"),
    pytest.param(("--resource", "news", "--template", "a.txt", "--text", "body.txt"),
                 "--text: resource 'news' sends SMS", id="sms-with-text"),
    pytest.param(("--resource", "letters", "--template", "body.html",
                  "--subject", "Hi {lead._fname"), "--subject: 1:4: unclosed", id="bad-subject"),
    pytest.param(("--resource", "letters", "--template", "body.html", "--subject", "Hi",
                  "--text", "bad.txt"), "bad.txt:1:", id="bad-text"),
    pytest.param(("--resource", "letters", "--template", "bad.txt", "--subject", "Hi"),
                 "bad.txt:1:", id="bad-html"),
    pytest.param(("--resource", "letters", "--template", "body.html", "--subject", "Hi",
                  "--text", "missing.txt"), "missing.txt: cannot read", id="missing-text"),
])
def test_cli_refusals_name_the_option(cli: Cli, args: tuple[str, ...], said: str) -> None:
    code, _, err = cli.create(*args)
    assert code == 2, err
    assert said in err, err
    assert json.loads(cli.ok("mailing", "list", "--json"))["mailings"] == []


# -- the API -----------------------------------------------------------------------------


class Api:
    def __init__(self, client: httpx.AsyncClient, secrets: dict[str, str]) -> None:
        self.client = client
        self.secrets = secrets

    async def post(self, url: str, json: Any = None) -> httpx.Response:
        return await self.client.post(url, json=json, headers=self._auth("sender"))

    async def get(self, url: str) -> httpx.Response:
        return await self.client.get(url, headers=self._auth("viewer"))

    def _auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[role]}"}

    async def create(self, **fields: Any) -> httpx.Response:
        body = {"name": "m", "kind": "broadcast", "resource": "letters",
                "database": "main", "template": HTML, **fields}
        return await self.post("/api/v1/mailings",
                               {k: v for k, v in body.items() if v is not None})

    async def wait_finished(self, mailing_id: int) -> dict[str, Any]:
        with anyio.fail_after(20):
            while True:
                r = await self.get(f"/api/v1/mailings/{mailing_id}")
                assert r.status_code == 200, r.text
                detail: dict[str, Any] = r.json()
                if detail["status"] == "finished":
                    return detail
                await anyio.sleep(0.02)


@pytest.fixture
async def api(open_herald: Callable[..., Any], sink: Sink) -> AsyncIterator[Api]:
    async with await open_herald(FakeGateway(), extra=EMAIL.format(port=sink.port)) \
            as herald, MailingService.running(herald) as service:
        await add_readers(herald.store)
        tokens = TokenStore(herald.store)
        secrets = {role: (await tokens.create(role))[1] for role in ("sender", "viewer")}
        transport = httpx.ASGITransport(create_app(herald, service))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://herald") as client:
            yield Api(client, secrets)


@pytest.mark.anyio
async def test_api_creates_an_email_mailing_and_start_sends_it(api: Api, sink: Sink) -> None:
    r = await api.create(subject=SUBJECT, text="Hi {lead._fname}: https://shop.example.com")
    assert r.status_code == 201, r.text
    mailing_id = r.json()["id"]
    r = await api.get(f"/api/v1/mailings/{mailing_id}")
    options = r.json()["options"]
    assert (options["subject"], options["text"]) == (
        SUBJECT, "Hi {lead._fname}: https://shop.example.com")
    r = await api.post(f"/api/v1/mailings/{mailing_id}/start")
    assert r.status_code == 200, r.text
    done = await api.wait_finished(mailing_id)
    assert done["launches"][0]["sent"] == PEOPLE
    got = by_recipient(sink)
    assert len(got) == PEOPLE
    for address, msg in got.items():
        assert msg["Subject"] == f"Привет, {fname(address)} 🎉"
        text = msg.get_body(("plain",))
        assert text is not None
        assert text.get_content().strip() == f"Hi {fname(address)}: https://shop.example.com"


@pytest.mark.anyio
async def test_api_senders_show_an_email_senders_from(api: Api) -> None:
    r = await api.get("/api/v1/senders")
    assert r.status_code == 200, r.text
    senders = {s["name"]: s for s in r.json()["senders"]}
    assert senders["news_mail"]["caller_id"] is None
    assert senders["news_mail"]["from"] == "Herald News <news@example.com>"
    assert senders["news_mail"]["reply_to"] == "help@example.com"
    assert senders["s1"]["caller_id"] == "ACME" and senders["s1"]["from"] is None


@pytest.mark.anyio
@pytest.mark.parametrize(("fields", "status", "field"), [
    pytest.param({}, 400, "subject", id="email-without-subject"),
    pytest.param({"subject": ""}, 400, "subject", id="empty-subject"),
    pytest.param({"subject": "  "}, 400, "subject", id="blank-subject"),
    pytest.param({"resource": "news", "template": "Hi", "subject": "Hi"}, 400, "subject",
                 id="sms-with-subject"),
    pytest.param({"resource": "news", "template": "Hi", "text": "Hi"}, 400, "text",
                 id="sms-with-text"),
    pytest.param({"subject": "Hi {lead._fname"}, 422, "subject", id="bad-subject"),
    pytest.param({"subject": "Hi", "text": "Hi {lead._fname"}, 422, "text", id="bad-text"),
    pytest.param({"subject": "Hi", "template": "<p>{lead._fname</p>"}, 422, "template",
                 id="bad-html"),
    pytest.param({"kind": "multivariate", "template": None, "test_share": 100,
                  "templates": [HTML, "<p>{lead._fname</p>"], "subject": "Hi"}, 422,
                 "template", id="bad-variant"),
])
async def test_api_refusals_name_the_field(
    api: Api, sink: Sink, fields: dict[str, Any], status: int, field: str
) -> None:
    r = await api.create(**fields)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field, r.text
    if fields.get("kind") == "multivariate":
        assert "templates[2]: unclosed" in r.json()["error"], r.text
    assert (await api.get("/api/v1/mailings")).json()["mailings"] == []
    assert sink.received == []


@pytest.mark.anyio
async def test_api_test_sends_an_email_mailing_to_given_addresses(api: Api, sink: Sink) -> None:
    r = await api.create(subject="Test for {lead._fname}")
    assert r.status_code == 201, r.text
    test = f"/api/v1/mailings/{r.json()['id']}/test"
    r = await api.post(test, {"to": ["+79161234567"]})
    assert r.status_code == 400 and r.json()["field"] == "to", r.text
    r = await api.post(test, {"to": ["Tester@QA.Example.COM"]})
    assert r.status_code == 200, r.text
    (run,) = r.json()["runs"]
    assert [(m["phone"], m["state"]) for m in run["messages"]] == [
        ("Tester@qa.example.com", "sent")]
    (received,) = sink.received
    assert received.rcpt_tos == ["Tester@qa.example.com"]
    assert _message(received)["Subject"].startswith("Test for P")


@pytest.mark.anyio
async def test_api_subscribes_and_unsubscribes_an_email_address(api: Api) -> None:
    r = await api.post("/api/v1/resources/letters/subscribe",
                       {"email": "New.Reader@Example.ORG", "database": "main"})
    assert r.status_code == 200, r.text
    (sub,) = r.json()["subscriptions"]
    # lowercased, as an import does: profiles are matched by email whatever its case
    assert (sub["phone"], sub["channel"], sub["status"]) == (
        "new.reader@example.org", "email", "subscribed")
    pid = sub["profile_id"]
    r = await api.get("/api/v1/resources/letters/subscriptions?email=New.Reader@EXAMPLE.org")
    assert [s["profile_id"] for s in r.json()["subscriptions"]] == [pid]
    r = await api.post("/api/v1/resources/letters/unsubscribe",
                       {"email": "New.Reader@example.org"})
    assert r.status_code == 200 and r.json()["changed"] == 1
    assert r.json()["subscriptions"][0]["status"] == "unsubscribed"
    # a profile subscribes with its own email: the same subscription, back
    r = await api.post("/api/v1/resources/letters/subscribe", {"profile_id": pid})
    assert r.status_code == 200 and r.json()["changed"] == 1, r.text
    assert [(s["phone"], s["status"]) for s in r.json()["subscriptions"]] == [
        ("new.reader@example.org", "subscribed")]
    # the other channel's key is refused, naming it
    for body, field in (({"phone": "+447911000001", "database": "main"}, "phone"),
                        ({"email": "not an address", "database": "main"}, "email")):
        r = await api.post("/api/v1/resources/letters/subscribe", body)
        assert (r.status_code, r.json()["field"]) == (400, field), r.text
    r = await api.post("/api/v1/resources/news/subscribe",
                       {"email": "a@example.org", "database": "main"})
    assert (r.status_code, r.json()["field"]) == (400, "email")


@pytest.mark.parametrize(("scope", "sms_sent"), [("profile_channel", 1), ("profile", 0)])
def test_a_profile_channel_policy_counts_only_its_channels_messages(
        cli: Cli, sink: Sink, scope: str, sms_sent: int) -> None:
    """Ann has an email and a phone. After an email to her, an SMS mailing under 1/7 of
    ``profile_channel`` still reaches her (no SMS yet this week); under ``profile`` the
    email counts, and she is skipped for the policy."""
    async def add_ann(store: Store) -> None:
        db = await store.database_id("main")
        ann = [ImportRecord("ann@example.org", "+447911999001", "ann@example.org",
                            {"_fname": "Ann"})]  # one profile, matched by email
        await store.import_profiles(db, ann, matching="email",
                                    resource_id=await store.resource_id("letters"),
                                    channel="email")
        await store.import_profiles(db, ann, matching="email",
                                    resource_id=await store.resource_id("news"))

    in_workspace(cli.ws / "herald.toml", add_ann)
    cli.ok("send", "--resource", "letters", "--database", "main", "--template", "body.html",
           "--subject", "Hi", "--json")
    assert "ann@example.org" in by_recipient(sink)
    log = json.loads(cli.ok("send", "--resource", "news", "--database", "main",
                            "--template", "a.txt", "--policy", f"1/7/{scope}", "--json"))
    sent = [json.loads(line)["to"]
            for line in (cli.ws / "sent.jsonl").read_text().splitlines()]
    assert sent.count("+447911999001") == sms_sent
    assert log["policy"] == 1 - sms_sent
