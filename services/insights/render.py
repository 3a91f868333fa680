"""A pack as CSV tables, SVG charts on an HTML page, and a PDF. Everything is drawn from the
suppressed tables (``Shown``): a chart never plots a withheld count."""

import csv
import io
import re
from collections.abc import Sequence
from html import escape

from fpdf import FPDF

from services.insights.domain import Pack, Shown

COLOURS = ("#1f6f8b", "#e07a2f", "#5b8c3a", "#8a5aa8")


def table_csv(shown: Shown) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(shown.header)
    writer.writerows(shown.body)
    return out.getvalue()


def _title(pack: Pack) -> str:
    where = f"school {pack.school_id}" if pack.school_id else "the whole district"
    return f"Data pack {pack.month}: district {pack.district_id}, {where}"


# --- SVG ---------------------------------------------------------------------------------------


Series = tuple[str, Sequence[int | None], Sequence[str]]  # name, counts shown, their texts


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series],
              width: int = 720, height: int = 260) -> str:
    """Grouped bars, one group per label; a withheld count (None) is a grey stub marked as
    the table shows it ("<10" or "*"), never a height."""
    top, bottom, left = 30, 60, 40
    plot_h = height - top - bottom
    peak = max([v for _, values, _ in series for v in values if v is not None] + [1])
    group_w = (width - left - 10) / max(1, len(labels))
    bar_w = max(2.0, group_w * 0.8 / max(1, len(series)))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="18" font-size="14" font-family="sans-serif">'
             f'{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
             'stroke="#333"/>']
    for g, label in enumerate(labels):
        x0 = left + g * group_w + group_w * 0.1
        for s, (_, values, texts) in enumerate(series):
            value = values[g]
            x = x0 + s * bar_w
            if value is None:
                parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - 4}" width="{bar_w:.1f}" '
                             'height="4" fill="#bbb"><title>withheld</title></rect>')
                parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h - 6}" '
                             'font-size="9" text-anchor="middle" font-family="sans-serif">'
                             f'{escape(texts[g])}</text>')
                continue
            h = plot_h * value / peak
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{COLOURS[s % len(COLOURS)]}">'
                         f'<title>{escape(label)}: {value}</title></rect>')
        parts.append(f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{top + plot_h + 14}" '
                     'font-size="9" text-anchor="middle" font-family="sans-serif">'
                     f'{escape(label)}</text>')
    for s, (name, _, _) in enumerate(series):
        y = height - 14
        x = left + s * 170
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" '
                     f'fill="{COLOURS[s % len(COLOURS)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}" font-size="11" font-family="sans-serif">'
                     f'{escape(name)}</text>')
    parts.append(f'<text x="{left - 4}" y="{top + 4}" font-size="9" text-anchor="end" '
                 f'font-family="sans-serif">{peak}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _column(shown: Shown, c: int, name: str, last: int | None = None) -> Series:
    """Column ``c`` of a table's body rows (or, with ``last``, its totals row up to it)."""
    if last is not None:
        return (name, list(shown.values[-1][:last]), list(shown.body[-1][1:last + 1]))
    return (name, [row[c] for row in shown.values[:-1]],
            [row[c + 1] for row in shown.body[:-1]])


def charts(pack: Pack) -> list[str]:
    n = len(pack.months)
    trend = bar_chart("Referrals opened and closed by month", [m[2:] for m in pack.months],
                      [_column(pack.table("referrals_opened"), 0, "opened", last=n),
                       _column(pack.table("referrals_closed"), 0, "closed", last=n)])
    outcomes = pack.table("outcomes")
    mix = bar_chart("Outcome mix", list(outcomes.table.rows), [_column(outcomes, 0, "referrals")])
    demand = pack.table("demand_capacity")
    gap = bar_chart("Demand against capacity by need", list(demand.table.rows),
                    [_column(demand, 0, "referrals opened"), _column(demand, 2, "slots")])
    return [trend, mix, gap]


# --- HTML --------------------------------------------------------------------------------------


def _html_table(shown: Shown, csv_href: str | None) -> str:
    head = "".join(f"<th scope=col>{escape(h)}</th>" for h in shown.header)
    rows = "".join(
        "<tr>" + f"<th scope=row>{escape(row[0])}</th>" +
        "".join(f"<td>{escape(v)}</td>" for v in row[1:]) + "</tr>" for row in shown.body)
    link = f' <a href="{escape(csv_href)}">CSV</a>' if csv_href else ""
    note = f"<p class=note>{escape(shown.table.note)}</p>" if shown.table.note else ""
    return (f"<section><h2>{escape(shown.table.title)}{link}</h2>{note}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>")


def html_page(pack: Pack, links: dict[str, str] | None = None) -> str:
    """A standalone page (no script, no outside file): figures, charts, tables, what the
    events cannot tell. ``links``: "pdf" and "csv:<table key>" to their addresses."""
    links = links or {}
    figures = "".join(f"<tr><th scope=row>{escape(f.label)}</th><td>{escape(f.value)}</td></tr>"
                      for f in pack.figures)
    pdf = f'<p><a href="{escape(links["pdf"])}">The whole pack as PDF</a></p>' \
        if "pdf" in links else ""
    tables = "".join(_html_table(t, links.get(f"csv:{t.table.key}")) for t in pack.tables)
    missing = "".join(f"<li>{escape(m)}</li>" for m in pack.missing)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(_title(pack))}</title><style>"
        "body{font-family:sans-serif;margin:2rem;max-width:60rem}"
        "table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
        "th,td{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}"
        "th[scope=row]{text-align:left}.note{color:#555;font-size:.9rem}"
        "</style></head><body>"
        f"<h1>{escape(_title(pack))}</h1>"
        f"<p>The twelve months {pack.months[0]} to {pack.months[-1]}. Counts under "
        f"{pack.threshold} are shown as &lt;{pack.threshold}; a * is withheld so that they "
        "cannot be worked out from the totals. No student is named or referenced.</p>"
        f"{pdf}<h2>Key figures</h2><table><tbody>{figures}</tbody></table>"
        + "".join(f"<figure>{svg}</figure>" for svg in charts(pack)) + tables +
        f"<h2>What the public events do not tell</h2><ul>{missing}</ul></body></html>")


# --- PDF ---------------------------------------------------------------------------------------


def _latin(text: str) -> str:
    """The PDF's built-in fonts are Latin-1: other letters become '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def pdf_bytes(pack: Pack) -> bytes:
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_creator("Ensemble insights")
    pdf.set_title(_latin(_title(pack)))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 8, _latin(_title(pack)), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.multi_cell(0, 5, f"The twelve months {pack.months[0]} to {pack.months[-1]}. Counts under "
                   f"{pack.threshold} are shown as <{pack.threshold}; a * is withheld so that "
                   "they cannot be worked out from the totals.", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, "Key figures", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for figure in pack.figures:
        pdf.cell(0, 5, _latin(f"{figure.label}: {figure.value}"), new_x="LMARGIN", new_y="NEXT")
    for svg in charts(pack):
        # fpdf2 draws SVG as vectors; it has no use for the tooltips (<title>).
        pdf.image(io.BytesIO(re.sub(r"<title>.*?</title>", "", svg).encode()), w=180)
    for shown in pack.tables:
        _pdf_table(pdf, shown)
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, "What the public events do not tell", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for line in pack.missing:
        pdf.multi_cell(0, 5, _latin(f"- {line}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _pdf_table(pdf: FPDF, shown: Shown) -> None:
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, _latin(shown.table.title), new_x="LMARGIN", new_y="NEXT")
    first = 42.0
    rest = (pdf.epw - first) / max(1, len(shown.header) - 1)
    pdf.set_font("Helvetica", "B", 7)
    with pdf.table(col_widths=(first, *([rest] * (len(shown.header) - 1))),
                   text_align=("LEFT", *(["RIGHT"] * (len(shown.header) - 1))),
                   line_height=4.5, width=pdf.epw) as table:
        head = table.row()
        for text in shown.header:
            head.cell(_latin(text))
        pdf.set_font("Helvetica", "", 7)
        for body in shown.body:
            row = table.row()
            for text in body:
                row.cell(_latin(text))
