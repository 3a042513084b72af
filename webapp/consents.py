"""Consent checkbox texts in the person's language: from CONSENTS, or from Engage's definitions."""

from __future__ import annotations

import threading
import time

from flask import current_app

from .engage import EngageError

CACHE_SECONDS = 300  # consent texts change rarely; ask Engage at most every five minutes
RETRY_SECONDS = 60  # after a failure, use the configured labels for a minute
_lock = threading.Lock()


def consent_texts(language: str) -> dict[str, dict]:
    """Field name (consent-<id>) → {"label", "url"} for each configured consent."""
    definitions = _engage_definitions() if current_app.config["CONSENT_TEXTS"] == "engage" else {}
    texts = {}
    for consent in current_app.config["CONSENTS"]:
        label = consent["label"].get(language) or consent["label"]["en"]
        meta = definitions.get(consent["id"], {}).get("metaData") or {}
        display = _in_language(meta.get("displayText"), language)
        if display:
            link = _in_language(meta.get("linkText"), language)
            label = f"{display} {link}".strip() if link else display
        texts[f"consent-{consent['id']}"] = {"label": label, "url": consent.get("url")}
    return texts


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
        fresh_for = CACHE_SECONDS
    except EngageError:
        definitions = cache.get("definitions", {})
        fresh_for = RETRY_SECONDS
    with _lock:
        cache.update(definitions=definitions, fresh_until=time.monotonic() + fresh_for)
    return definitions
