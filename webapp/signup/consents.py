"""Consent checkbox texts in the person's language, from CONSENTS or Engage's definitions, and
the terms behind each consent.

Engage's consent definitions (engage-api.md §4) are asked for when their texts are used
(CONSENT_TEXTS=engage) or when a consent has no configured terms URL, so that the terms Engage
keeps (`conditionText`, HTML) can be shown instead. That HTML is cleaned to a few harmless tags
before it reaches a page.
"""

from __future__ import annotations

import logging
import threading
import time

import nh3
from flask import current_app
from markupsafe import Markup

from ..engage import EngageError
from ..i18n import gettext as _

log = logging.getLogger(__name__)

CACHE_SECONDS = 300  # consent texts change rarely; ask Engage at most every five minutes
RETRY_SECONDS = 60  # after a failure, use what was known (or the configured labels) a minute
_lock = threading.Lock()

# What may stay of Engage's conditionText: text structure and https links, nothing active.
TERMS_TAGS = {"p", "br", "ul", "ol", "li", "strong", "em", "b", "i", "h3", "h4", "a"}
TERMS_ATTRIBUTES = {"a": {"href"}}


_NO_DEFINITIONS: dict[str, dict] = {}  # one object: texts made without Engage's stay cached


def consent_texts(language: str) -> dict[str, dict]:
    """Field name (consent-<id>) → {"label", "url", "terms"} for each configured consent.
    `terms` is cleaned HTML from Engage when the consent has no URL, else None.

    Made once per language from each set of Engage's definitions: every page and every
    sign-up's consent record would otherwise clean the same terms again. A new set of
    definitions (read again after CACHE_SECONDS, or after a failure) makes them anew; the
    configuration does not change while the app runs. Read-only for callers: shared by every
    request until then."""
    definitions = _engage_definitions() if _uses_engage() else _NO_DEFINITIONS
    cache = current_app.extensions.setdefault("consent_texts", {})
    if cache.get("definitions") is not definitions:
        cache.clear()
        cache["definitions"] = definitions
    texts = cache.get(language)
    if texts is None:
        texts = cache[language] = _texts(language, definitions)
    return texts


def _texts(language: str, definitions: dict[str, dict]) -> dict[str, dict]:
    texts = {}
    for consent in current_app.config["CONSENTS"]:
        label = consent["label"].get(language) or consent["label"]["en"]
        sources = ["config"]
        meta = definitions.get(consent["id"], {}).get("metaData") or {}
        if current_app.config["CONSENT_TEXTS"] == "engage":
            display = _in_language(meta.get("displayText"), language)
            if display:
                link = _in_language(meta.get("linkText"), language)
                label = f"{display} {link}".strip() if link else display
                sources = ["engage"]
        terms = None
        if not consent.get("url"):
            # The terms in the person's language; where Engage keeps none in it, those of
            # another language rather than a box to tick with nothing to read.
            conditions = meta.get("conditionText")
            condition = (
                _in_language(conditions, language)
                or _in_language(conditions, "en")
                or _any_language(conditions)
            )
            terms = _clean(condition) if condition else None
            if terms and "engage" not in sources:
                sources.append("engage")
        texts[f"consent-{consent['id']}"] = {
            "label": label,
            "url": consent.get("url"),
            "terms": terms,
            # The words of the link to the terms, beside the box: the page shows them, and
            # the consent record keeps them with the rest.
            "link_text": _("Read the terms") if consent.get("url") or terms else None,
            "source": "+".join(sources),  # where the words came from, for consent records
        }
    return texts


def problems() -> tuple[list[str] | None, list[str] | None]:
    """For readiness: the configured consents the tenant does not have, and the required ones
    with no url and no terms in Engage."""
    return unknown_consent_ids(), missing_terms()


def unknown_consent_ids() -> list[str] | None:
    """Configured consent ids that Engage's definitions do not have (Engage would drop them
    from a create without a word), or None when the definitions could not be read."""
    definitions = _engage_definitions()
    if not current_app.extensions["consent_cache"].get("read"):
        return None
    return [c["id"] for c in current_app.config["CONSENTS"] if c["id"] not in definitions]


def missing_terms() -> list[str] | None:
    """Required consents that have neither a `url` nor terms in Engage (conditionText in any
    language): the person would tick "I accept the terms" with nothing to read, and the
    consent record would prove a tick, not what was agreed to. None: Engage did not answer."""
    required = [c for c in current_app.config["CONSENTS"] if c["required"] and not c.get("url")]
    if not required:
        return []
    definitions = _engage_definitions()
    if not current_app.extensions["consent_cache"].get("read"):
        return None
    return [
        c["id"]
        for c in required
        if not _any_language((definitions.get(c["id"], {}).get("metaData") or {}).get(
            "conditionText"
        ))
    ]  # fmt: skip


def _any_language(texts) -> str | None:
    if not isinstance(texts, dict):
        return None
    return next((t.strip() for t in texts.values() if isinstance(t, str) and t.strip()), None)


def _uses_engage() -> bool:
    config = current_app.config
    return config["CONSENT_TEXTS"] == "engage" or any(not c.get("url") for c in config["CONSENTS"])


def _clean(html: str) -> Markup:
    cleaned = nh3.clean(
        html,
        tags=TERMS_TAGS,
        attributes=TERMS_ATTRIBUTES,
        url_schemes={"https"},
        link_rel="noopener noreferrer",
    )
    return Markup(cleaned)  # noqa: S704 - cleaned by nh3 to the tags above


def _in_language(texts, language: str) -> str | None:
    """The text for `language` from a map keyed by culture names (sv-SE, en-GB, nb-NO)."""
    if not isinstance(texts, dict):
        return None
    wanted = {language, "no"} if language == "nb" else {language}
    for culture, text in texts.items():
        if isinstance(text, str) and text.strip() and culture.split("-")[0].lower() in wanted:
            return text.strip()
    return None


def _engage_definitions() -> dict[str, dict]:
    cache = current_app.extensions.setdefault("consent_cache", {})
    with _lock:
        if time.monotonic() < cache.get("fresh_until", 0):
            return cache["definitions"]
    try:
        found = current_app.extensions["engage"].get_consents()
        definitions = {str(d.get("id")): d for d in found}
        fresh_for, read = CACHE_SECONDS, True
    except EngageError:
        definitions = cache.get("definitions", {})
        fresh_for, read = RETRY_SECONDS, cache.get("read", False)
    with _lock:
        cache.update(definitions=definitions, fresh_until=time.monotonic() + fresh_for, read=read)
    return definitions
