"""Render family messages from Jinja templates, per language, with an English fallback.

Templates live in ``templates/<language>/<kind>.<part>.j2``. Parts: ``subject`` (one line),
``txt`` (plain-text email), ``html`` (HTML email, the only autoescaped part) and ``sms``.
``opt_out_confirmation`` and ``opt_in_confirmation`` exist as ``sms`` only.
"""

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, TemplateNotFound, nodes
from markupsafe import Markup, escape

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_LANGUAGE = "en"
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "es", "vi", "zh", "ar")
RTL_LANGUAGES: frozenset[str] = frozenset({"ar"})
EMAIL_PARTS: tuple[str, ...] = ("subject", "txt", "html")
# kind -> the parts it has
KINDS: dict[str, tuple[str, ...]] = {
    "partner_matched": (*EMAIL_PARTS, "sms"),
    "family_event_invitation": (*EMAIL_PARTS, "sms"),
    "announcement": (*EMAIL_PARTS, "sms"),
    "opt_out_confirmation": ("sms",),
    "opt_in_confirmation": ("sms",),
    "partner_link": EMAIL_PARTS,  # to a partner's contact (en, es; others read English)
}
# kind -> the variables its templates may use (tests hold every template to this)
KIND_VARIABLES: dict[str, frozenset[str]] = {
    "partner_matched": frozenset(
        {"family_name", "school_name", "need_label", "partner_name", "unsubscribe_url",
         "reply_code"}
    ),
    "family_event_invitation": frozenset(
        {"title", "starts_at_local", "place", "rsvp_url", "school_name", "unsubscribe_url"}
    ),
    "announcement": frozenset({"title", "body", "school_name", "unsubscribe_url"}),
    "opt_out_confirmation": frozenset({"school_name"}),
    "partner_link": frozenset({"partner_name", "need_label", "urgency_label", "url", "expires"}),
    "opt_in_confirmation": frozenset({"school_name"}),
}

# Labels read as "help with <label>" and as a "Type of help: <label>" line.
NEED_LABELS: dict[str, dict[str, str]] = {
    "en": {
        "mental_health": "mental health support",
        "dental": "dental care",
        "vision": "vision care",
        "medical": "medical care",
        "food": "food",
        "housing": "housing",
        "clothing": "clothing",
        "tutoring": "tutoring",
        "mentoring": "mentoring",
        "after_school": "after-school programs",
        "early_childhood": "early childhood programs",
        "crisis": "crisis support",
        "legal": "legal questions",
        "employment": "finding a job",
        "other": "other needs",
    },
    "es": {
        "mental_health": "apoyo de salud mental",
        "dental": "atención dental",
        "vision": "cuidado de la vista",
        "medical": "atención médica",
        "food": "alimentos",
        "housing": "vivienda",
        "clothing": "ropa",
        "tutoring": "tutorías",
        "mentoring": "mentoría",
        "after_school": "programas después de clases",
        "early_childhood": "programas para la primera infancia",
        "crisis": "apoyo en situaciones de crisis",
        "legal": "asuntos legales",
        "employment": "búsqueda de empleo",
        "other": "otras necesidades",
    },
    "vi": {
        "mental_health": "hỗ trợ sức khỏe tâm thần",
        "dental": "chăm sóc răng miệng",
        "vision": "chăm sóc mắt",
        "medical": "chăm sóc y tế",
        "food": "thực phẩm",
        "housing": "nhà ở",
        "clothing": "quần áo",
        "tutoring": "dạy kèm",
        "mentoring": "cố vấn, đồng hành",
        "after_school": "chương trình sau giờ học",
        "early_childhood": "chương trình mầm non",
        "crisis": "hỗ trợ khi gặp khủng hoảng",
        "legal": "vấn đề pháp lý",
        "employment": "tìm việc làm",
        "other": "các nhu cầu khác",
    },
    "zh": {
        "mental_health": "心理健康支持",
        "dental": "牙科护理",
        "vision": "视力保健",
        "medical": "医疗服务",
        "food": "食物援助",
        "housing": "住房援助",
        "clothing": "衣物援助",
        "tutoring": "课业辅导",
        "mentoring": "成长导师",
        "after_school": "课后活动项目",
        "early_childhood": "学前教育项目",
        "crisis": "危机援助",
        "legal": "法律援助",
        "employment": "就业帮助",
        "other": "其他需求",
    },
    "ar": {
        "mental_health": "دعم الصحة النفسية",
        "dental": "رعاية الأسنان",
        "vision": "رعاية النظر",
        "medical": "الرعاية الطبية",
        "food": "المساعدة الغذائية",
        "housing": "المساعدة في السكن",
        "clothing": "الملابس",
        "tutoring": "الدعم الدراسي",
        "mentoring": "التوجيه والإرشاد",
        "after_school": "برامج ما بعد المدرسة",
        "early_childhood": "برامج الطفولة المبكرة",
        "crisis": "الدعم في حالات الأزمات",
        "legal": "المساعدة القانونية",
        "employment": "المساعدة في إيجاد عمل",
        "other": "احتياجات أخرى",
    },
}


_NAME = re.compile(r"[a-z][a-z0-9_]*")


class TemplateMissingError(LookupError):
    """Not even an English template exists for this kind and part."""


@dataclass(frozen=True)
class Rendered:
    text: str
    language: str  # the language actually used
    fell_back: bool  # True when English replaced the requested language


def normalize_language(tag: str | None) -> str:
    """Primary subtag, lower case: "es-MX" -> "es", "zh_Hant_TW" -> "zh", None -> ""."""
    return re.split(r"[-_]", (tag or "").strip(), maxsplit=1)[0].lower()


def need_label(need: str, language: str) -> str:
    """Localized label for a need category; unknown categories read as "other"."""
    labels = NEED_LABELS.get(normalize_language(language), NEED_LABELS[DEFAULT_LANGUAGE])
    return labels.get(need, labels["other"])


def paragraphs(text: object) -> Markup:
    """HTML filter: escaped text, blank lines become paragraphs, single newlines <br>."""
    blocks = re.split(r"\n\s*\n", str(text).replace("\r\n", "\n").strip())
    html = Markup('<p style="margin:0 0 16px 0;">{}</p>')
    return Markup("\n").join(
        html.format(Markup("<br>\n").join(escape(line) for line in block.split("\n")))
        for block in blocks
        if block.strip()
    )


def make_environment(templates_dir: Path = TEMPLATES_DIR) -> Environment:
    env = Environment(
        loader=FileSystemLoader(templates_dir),
        undefined=StrictUndefined,
        # Only HTML is markup; escaping plain text or SMS would show "&amp;" to families.
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,  # templates ship with the code: no stat() of the file per message
    )
    env.filters["paragraphs"] = paragraphs
    return env


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return make_environment()


def _finish(part: str, text: str) -> str:
    if part in ("subject", "sms"):  # one line; stray newlines would cost SMS units
        return " ".join(text.split())
    return text.strip() + "\n"


# Variables that differ from one family to the next; the rest (an announcement's title and
# body, the school) are the same for a whole batch.
PER_MESSAGE: tuple[str, ...] = ("unsubscribe_url", "family_name", "reply_code")
_MARK = "\x00ensemble:{}\x00"
_MARKS = re.compile("\x00ensemble:(\\d)\x00")
_STRUCTURE = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.Macro,
              nodes.CallBlock, nodes.EvalContextModifier, nodes.Assign, nodes.AssignBlock)


@cache
def _prints_bare(name: str) -> bool:
    """True when the template uses the per-message variables only as bare ``{{ x }}`` output
    (no filter, test, condition or assignment, nothing included): then rendering it once with
    markers and writing each message's values where they stand is the same text as rendering
    it for that message (escaped where the template autoescapes, as ``{{ x }}`` does)."""
    env = _environment()
    if env.finalize is not None:
        return False
    tree = env.parse(env.loader.get_source(env, name)[0])  # type: ignore[union-attr]
    if any(True for _ in tree.find_all(_STRUCTURE)):
        return False
    bare = sum(1 for output in tree.find_all(nodes.Output) for node in output.nodes
               if isinstance(node, nodes.Name) and node.name in PER_MESSAGE)
    every = sum(1 for node in tree.find_all(nodes.Name) if node.name in PER_MESSAGE)
    return bare == every


@lru_cache(maxsize=512)
def _skeleton(name: str, shared: tuple[tuple[str, Any], ...], marked: tuple[int, ...]) -> str:
    """The template rendered with the shared variables and a marker for each per-message one:
    once per language and batch, not once per family."""
    variables = dict(shared) | {PER_MESSAGE[i]: _MARK.format(i) for i in marked}
    return _environment().get_template(name).render(**variables)


def _render(template: Template, variables: dict[str, Any]) -> str:
    name = template.name or ""
    shared = tuple(sorted((k, v) for k, v in variables.items() if k not in PER_MESSAGE))
    if not _prints_bare(name) or any(isinstance(v, str) and "\x00" in v for _, v in shared):
        return template.render(**variables)
    try:
        hash(shared)
    except TypeError:  # a list or a mapping among the variables: rendered as it is
        return template.render(**variables)
    marked = tuple(i for i, key in enumerate(PER_MESSAGE) if key in variables)
    autoescape = template.environment.autoescape
    escaped = autoescape(name) if callable(autoescape) else autoescape
    values = [str(escape(variables[key]) if escaped else variables[key]) if key in variables
              else "" for key in PER_MESSAGE]
    return _MARKS.sub(lambda m: values[int(m[1])], _skeleton(name, shared, marked))


def render(kind: str, language: str, part: str, **variables: Any) -> Rendered:
    """Render one part. Passing ``need`` instead of ``need_label`` localizes it to the language
    actually used. Raises jinja2.UndefinedError when a variable the template uses is missing."""
    if not (_NAME.fullmatch(kind) and _NAME.fullmatch(part)):
        raise TemplateMissingError(f"bad template name {kind!r}.{part!r}")
    env = _environment()
    wanted = normalize_language(language)
    candidates = [wanted] if wanted in SUPPORTED_LANGUAGES else []
    if wanted != DEFAULT_LANGUAGE:
        candidates.append(DEFAULT_LANGUAGE)
    for used in candidates:
        try:
            template = env.get_template(f"{used}/{kind}.{part}.j2")
        except TemplateNotFound:
            continue
        if "need" in variables and "need_label" not in variables:
            variables["need_label"] = need_label(str(variables["need"]), used)
        return Rendered(_finish(part, _render(template, variables)), used, used != wanted)
    raise TemplateMissingError(f"no template for {kind}.{part}")
