"""The console's own words in English and Spanish (babel catalogs in translations/), chosen by
the person's switch (a cookie) or else the browser's Accept-Language; dates in the school's
time zone, written the language's way."""

import io
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from fastapi import Request

LANGUAGES = ("en", "es")
LANG_COOKIE = "ensemble_lang"
DOMAIN = "console"
FOLDER = Path(__file__).parent / "translations"


class Translator:
    def __init__(self, lang: str, translations: NullTranslations) -> None:
        self.lang = lang
        self.translations = translations
        self.locale = Locale.parse(lang)

    def gettext(self, message: str, **values: object) -> str:
        text = self.translations.gettext(message)
        return text.format(**values) if values else text

    def when(self, value: str | datetime | None, zone: str) -> str:
        if not value:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_datetime(moment, "medium", tzinfo=ZoneInfo(zone), locale=self.locale)


def load_translators() -> dict[str, Translator]:
    """Compiled from the .po files in memory at start: no binary .mo kept in the repository.
    English has a catalog too: the words for the codes the APIs answer with."""
    found: dict[str, Translator] = {}
    for lang in LANGUAGES:
        po = FOLDER / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=lang, domain=DOMAIN)
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        found[lang] = Translator(lang, Translations(buffer, domain=DOMAIN))
    return found


def choose_language(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    wanted = []
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        if tag:
            wanted.append((weight, tag.split("-")[0].lower()))
    for _weight, lang in sorted(wanted, key=lambda w: -w[0]):
        if lang in LANGUAGES:
            return lang
    return "en"
