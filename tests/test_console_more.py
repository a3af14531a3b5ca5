"""More of the operator console in headless Chromium: a multivariate mailing's variants
side by side and a manual winner picked from the page; and the live counts of a broadcast
watched through another API process of a cluster than the one that started it (the
figures come from the store: every worker's). Screenshots go to ``tmp_path`` and to
``HERALD_ARTIFACTS``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.console_helpers import (
    WIDE,
    browser_test,
    chromium,
    count,
    log_in,
    served_console,
    wait_for,
)
from tests.console_more_helpers import cluster_console

TEMPLATES = ["A: Hi {lead._fname}, spring sale today.",
             "B: {lead._fname}, 30% off all week.",
             "C: New in store, {lead._fname}: come and see."]


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _receipted(api: Any, mailing: int, by: str | None = None) -> list[dict[str, Any]] | None:
    """The channel report's rows once every sent message has its receipt, else None."""
    params: dict[str, Any] = {"mailing": mailing}
    if by:
        params["by"] = by
    rows: list[dict[str, Any]] = api.get("/reports/channel", params=params).json()["rows"]
    if rows and all(r["sent"] and r["delivered"] + r["undelivered"] == r["sent"] for r in rows):
        return rows
    return None


def _row_figures(row: Any) -> list[str]:
    """A variants table row's cells (name first), as shown."""
    return [c.strip() for c in row.locator("th, td").all_inner_texts()]


def _digits(text: str) -> int:
    return int("".join(c for c in text if c.isdigit()) or 0)


def _column(page: Any, table: str, name: str) -> int:
    """The index of the column headed ``name`` in ``table``."""
    heads = [h.strip() for h in page.locator(f"{table} thead th").all_inner_texts()]
    assert name in heads, heads
    return heads.index(name)


# -- multivariate: the variants side by side, a manual pick -----------------------------------


@browser_test
def test_a_manual_winner_is_picked_from_the_variants_table(tmp_path: Path) -> None:
    expect = _expect()
    with served_console(tmp_path, profiles=300, senders={"s1": 60, "s2": 60}) as console, \
            chromium(tmp_path) as browsing:
        with console.client("sender") as api:
            r = api.post("/mailings", json={
                "name": "Spring variants", "kind": "multivariate", "resource": "news",
                "database": "main", "templates": TEMPLATES, "test_share": 30,
                "winner": "manual"})
            assert r.status_code == 201, r.text
            mailing = int(r.json()["id"])
            assert api.post(f"/mailings/{mailing}/start").status_code == 200

            def tested() -> dict[str, Any] | None:
                d: dict[str, Any] = api.get(f"/mailings/{mailing}").json()
                done = d["state"] == "waiting" and d["launches_total"] == 3 and all(
                    run["status"] == "finished" for run in d["launches"])
                return d if done else None

            detail = wait_for(tested, "the variant tests", timeout=60)
            assert detail["winner"] is None and detail["variants"] == 3
            tests = {run["variant"]: run for run in detail["launches"]}
            assert set(tests) == {1, 2, 3}
            assert {run["phase"] for run in tests.values()} == {"test"}
            rows = wait_for(lambda: _receipted(api, mailing, "variant"),
                            "the tests' receipts", timeout=20)
        by_variant = {r["variant"]: r for r in rows}
        assert set(by_variant) == {1, 2, 3}

        page = browsing.open(console.base, WIDE)
        log_in(page, console.tokens["sender"])
        page.goto(f"/console#/mailings/{mailing}")
        expect(page.locator("#mailing-status")).to_have_text(re.compile("finished", re.I))
        table = page.locator("table#variants")
        expect(table).to_be_visible()
        body = table.locator("tbody tr")
        expect(body).to_have_count(3)
        expect(table.locator("tr.winner")).to_have_count(0)
        sent_col, delivered_col = (_column(page, "table#variants", "Sent"),
                                   _column(page, "table#variants", "Delivered"))
        _column(page, "table#variants", "Pick")  # a sender may pick: no winner yet
        heads = page.locator("table#variants thead th").count()
        for variant, report in by_variant.items():
            row = table.locator(f'tbody tr[data-variant="{variant}"]')
            expect(row).to_have_count(1)
            figures = _row_figures(row)
            assert len(figures) == heads, figures  # one cell per column, Pick included
            assert f"Variant {variant}" in figures[0]
            assert _digits(figures[sent_col]) == report["sent"] == tests[variant]["sent"]
            assert _digits(figures[delivered_col]) == report["delivered"]
        table.scroll_into_view_if_needed()
        for variant in by_variant:  # side by side: all three on the screen at once
            expect(table.locator(f'tbody tr[data-variant="{variant}"]')).to_be_in_viewport()
        browsing.shoot(page, "console-mv-01-variants")

        # The Pick of variant 3's row opens the dialog on variant 3; the operator picks 2.
        table.locator('tbody tr[data-variant="3"] button', has_text="Pick").click()
        dialog = page.locator("dialog[open]")
        expect(dialog).to_be_visible()
        expect(dialog.locator("#pick-variant")).to_have_value("3")
        expect(dialog.locator("#pick-variant option")).to_have_count(3)
        dialog.locator("#pick-variant").select_option("2")
        browsing.shoot(page, "console-mv-02-pick-dialog", full_page=False)
        dialog.locator("button.confirm").click()
        expect(page.locator("dialog[open]")).to_have_count(0)

        winner = table.locator("tr.winner")
        expect(winner).to_have_count(1, timeout=20_000)
        expect(winner).to_have_attribute("data-variant", "2")
        expect(table.locator("button", has_text="Pick")).to_have_count(0)
        with console.client("viewer") as api:
            assert api.get(f"/mailings/{mailing}").json()["winner"] == 2

            def finished() -> dict[str, Any] | None:
                d: dict[str, Any] = api.get(f"/mailings/{mailing}").json()
                ok = d["state"] == "done" and d["launches_total"] == 4 and all(
                    run["status"] == "finished" for run in d["launches"])
                return d if ok else None

            done = wait_for(finished, "the winner run", timeout=60)
            won = [run for run in done["launches"] if run["phase"] == "winner"]
            assert len(won) == 1 and won[0]["variant"] == 2
            # the rest of the audience: more than all three tests together (30 % of it)
            assert won[0]["recipients"] > sum(t["recipients"] for t in tests.values())
            rows = wait_for(lambda: _receipted(api, mailing, "variant"),
                            "the winner's receipts", timeout=20)
        after = {r["variant"]: r for r in rows}
        assert after[2]["sent"] == tests[2]["sent"] + won[0]["sent"]
        assert (after[1]["sent"], after[3]["sent"]) == (tests[1]["sent"], tests[3]["sent"])
        # the page follows: the winner's row now counts the rest too
        page.locator("#refresh-reports").click()
        row = table.locator('tbody tr[data-variant="2"]')
        wait_for(lambda: _digits(_row_figures(row)[sent_col]) == after[2]["sent"],
                 f"the winner's row to count {after[2]['sent']} sent", timeout=10)
        assert _digits(_row_figures(row)[delivered_col]) == after[2]["delivered"]
        expect(winner).to_have_attribute("data-variant", "2")
        expect(page.locator("#mailing-meta")).to_contain_text("variant 2")
        table.scroll_into_view_if_needed()
        browsing.shoot(page, "console-mv-03-winner")
        assert not browsing.problems, browsing.problems


# -- a cluster: the page on one API process, the mailing started on another -------------------


def _sent_over_time(page: Any, until: float) -> list[int]:
    """The page's sent figure, read every 0.5 s until the status is no longer running."""
    seen = []
    while time.monotonic() < until:
        seen.append(count(page, "sent"))
        status = page.locator("#mailing-status").inner_text()
        if not re.search("running", status, re.I):
            break
        time.sleep(0.5)
    return seen


@browser_test
def test_live_counts_on_one_api_process_follow_a_run_started_on_another(
        tmp_path: Path, pg_url: str) -> None:
    expect = _expect()
    with cluster_console(tmp_path, pg_url, profiles=400,
                         senders={"s1": 30, "s2": 30}) as cluster, \
            chromium(tmp_path) as browsing:
        a, b = cluster.a, cluster.b
        with a.client("sender") as api:
            r = api.post("/mailings", json={"name": "Cluster sale", "kind": "broadcast",
                                            "resource": "news", "database": "main",
                                            "template": "Hi {lead._fname}, sale today."})
            assert r.status_code == 201, r.text
            mailing = int(r.json()["id"])
            started = api.post(f"/mailings/{mailing}/start")
            assert started.status_code == 200, started.text

        page = browsing.open(b.base, WIDE)
        log_in(page, b.tokens["viewer"])
        page.goto(f"/console#/mailings/{mailing}")
        expect(page.locator("#mailing-status")).to_have_text(re.compile("running", re.I))
        wait_for(lambda: count(page, "sent") > 0, "the first sent message on B", timeout=20)
        browsing.shoot(page, "console-cluster-01-running-on-b")
        seen = _sent_over_time(page, time.monotonic() + 40)
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # it grows, live

        expect(page.locator("#mailing-status")).to_have_text(
            re.compile("finished", re.I), timeout=30_000)
        with a.client("viewer") as api:
            rows = wait_for(lambda: _receipted(api, mailing), "every receipt, on A",
                            timeout=20)
            report = rows[0]
            detail = api.get(f"/mailings/{mailing}").json()
        assert detail["status"] == "finished" and detail["sent"] == report["sent"] > 0
        # B's page reaches A's final figures (the live stream, every 5 s once finished)
        keys = ("recipients", "sent", "delivered", "undelivered", "failed", "segments")
        wait_for(lambda: all(count(page, k) == report[k] for k in keys),
                 f"B's page to show A's figures {[report[k] for k in keys]}", timeout=15)
        with b.client("viewer") as api:
            assert api.get(f"/mailings/{mailing}").json()["sent"] == detail["sent"]
        # each sender's pace on B's chart too: the worker's, read from the store
        for sender in ("s1", "s2"):
            expect(page.locator(f'svg#sender-chart path.series[data-sender="{sender}"]')
                   ).to_have_count(1)
        assert int(page.locator("svg#sender-chart").get_attribute("data-points") or 0
                   ) >= 3  # several updates while it ran
        browsing.shoot(page, "console-cluster-02-finished-on-b")
        assert not browsing.problems, browsing.problems
