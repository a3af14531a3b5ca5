"""Who clicked: a person, or a crawler or link-preview bot (whose click is kept, not counted).

The judge is crawlerdetect (a port of the maintained JayBizzle/Crawler-Detect patterns),
which knows the preview fetchers of messengers and social sites (facebookexternalhit,
WhatsApp, TelegramBot, Slackbot, Twitterbot, Discordbot, SkypeUriPreview, vkShare...) as
well as search crawlers and HTTP libraries. A click with no user agent at all is a bot too:
every browser sends one.

Its regular expressions cost 0.2 to 0.6 ms per user agent, more than a whole redirect
should, so verdicts are kept per user agent in an LRU: real traffic comes from a few
thousand distinct agents, and each is judged once.

An email's open pixel is judged by ``is_open_bot``: the same, but for the mail clients and
webmail image proxies that fetch a message's images when a person opens it, which
crawlerdetect counts as bots: Gmail's ``GoogleImageProxy``, ``YahooMailProxy`` (Yahoo and
AOL), and Outlook's desktop and mobile apps (``Microsoft Outlook``, ``Outlook-iOS``,
``Outlook-Android``). Their fetch is the person's open. (Apple Mail Privacy Protection's
prefetch is told apart by ``engine.tracking.opens.is_prefetch``, not here.)
"""

from __future__ import annotations

import re

from crawlerdetect import CrawlerDetect  # type: ignore[import-untyped]

from engine.tracking.lru import Lru

__all__ = ["BotDetector"]

#: User agents longer than this are judged by their first so many characters.
MAX_AGENT = 512

#: Mail clients and image proxies that fetch an email's pixel on a person's open, which
#: crawlerdetect takes for bots (see the module docstring).
MAIL_CLIENTS = re.compile(
    r"GoogleImageProxy|YahooMailProxy|Microsoft Outlook|Outlook-(?:iOS|Android)/")


class BotDetector:
    """``is_bot(user_agent)``: crawlerdetect's verdict, remembered for ``size`` agents."""

    def __init__(self, size: int = 8192) -> None:
        self._detect = CrawlerDetect()
        self._verdicts: Lru[str, bool] = Lru(size)
        # the first call compiles the patterns (tens of ms): at start-up, not on a click
        self._detect.isCrawler("Mozilla/5.0")

    def is_bot(self, user_agent: str | None) -> bool:
        if not user_agent or not user_agent.strip():
            return True
        agent = user_agent[:MAX_AGENT]
        verdict = self._verdicts.get(agent)
        if verdict is None:
            verdict = bool(self._detect.isCrawler(agent))
            self._verdicts.put(agent, verdict)
        return verdict

    def is_open_bot(self, user_agent: str | None) -> bool:
        """Whether a fetch of an email's open pixel is a bot's: ``is_bot``, but for the
        mail clients and proxies of ``MAIL_CLIENTS``, whose fetch is a person's open."""
        if user_agent and MAIL_CLIENTS.search(user_agent, 0, MAX_AGENT):
            return False
        return self.is_bot(user_agent)
