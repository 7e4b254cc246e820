"""The PDF renderer (see render.py for the layout). fpdf2 adds about 46 MB to a process,
so this module is imported on the first PDF export, not when workers start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fpdf import FPDF

from settler_jobs.exports.render import CONTROL_CHARS, FONT_PATH, Sink, cell_text


class _Document(FPDF):
    """fpdf2 document with a repeated table header and a page-number footer."""

    table_header: Sequence[str] = ()
    widths: Sequence[float] = ()

    def header(self) -> None:
        if self.table_header:
            self.set_font("DejaVu", size=7)
            self.set_fill_color(225, 225, 225)
            y = self.get_y()
            self.rect(self.l_margin, y, sum(self.widths), PdfRenderer.ROW_H, style="F")
            _draw_row(self, self.table_header, self.widths, y)
            self.set_y(y + PdfRenderer.ROW_H)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("DejaVu", size=7)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")


def _draw_row(doc: FPDF, cells: Sequence[str], widths: Sequence[float], y: float) -> None:
    x = doc.l_margin
    baseline = y + PdfRenderer.ROW_H - 1.5
    for text, width in zip(cells, widths, strict=True):
        if text:
            doc.text(x + 1, baseline, text)
        x += width


class PdfRenderer:
    """A paginated table in A4 landscape, rendered at `finish`."""

    ROW_H: Final = 5.0
    LAYOUT_SAMPLE: Final = 200

    def __init__(self, sink: Sink, *, title: str, meta: Sequence[tuple[str, str]]) -> None:
        self._sink = sink
        self._title = title
        self._meta = meta
        self._doc = _Document(orientation="L", unit="mm", format="A4")
        self._doc.set_auto_page_break(False)
        self._doc.set_margins(10, 10, 10)
        self._doc.add_font("DejaVu", fname=str(FONT_PATH))
        self._glyphs: frozenset[int] = frozenset()
        self._headers: list[str] = []

    def begin(self, headers: Sequence[str]) -> None:
        doc = self._doc
        doc.add_page()
        doc.set_font("DejaVu", size=14)
        doc.cell(0, 8, self._safe(self._title), new_x="LMARGIN", new_y="NEXT")
        doc.set_font("DejaVu", size=8)
        for label, value in self._meta:
            doc.cell(0, 5, self._safe(f"{label}: {value}")[:300], new_x="LMARGIN", new_y="NEXT")
        doc.ln(2)
        doc.set_font("DejaVu", size=7)
        font = doc.current_font
        self._glyphs = frozenset(getattr(font, "cmap", None) or ())
        self._headers = [self._safe(h) for h in headers]

    def _layout(self, sample: Sequence[Sequence[Any]]) -> None:
        """Column widths from the header and the first rows, then the first table header."""
        doc = self._doc
        usable = doc.w - doc.l_margin - doc.r_margin
        natural = [doc.get_string_width(h) + 3 for h in self._headers]
        for row in sample[: self.LAYOUT_SAMPLE]:
            for i, value in enumerate(row):
                text = cell_text(value)[:80]
                natural[i] = max(natural[i], doc.get_string_width(self._safe(text)) + 3)
        capped = [min(w, usable * 0.3) for w in natural]
        scale = usable / sum(capped)
        doc.widths = [w * scale for w in capped]
        doc.table_header = [self._fit(h, w) for h, w in zip(self._headers, doc.widths, strict=True)]
        doc.header()

    def write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        doc = self._doc
        if not doc.widths:
            self._layout(rows)
        bottom = doc.h - 15
        widths = doc.widths
        for row in rows:
            if doc.get_y() + self.ROW_H > bottom:
                doc.add_page()
            y = doc.get_y()
            cells = [
                self._fit(self._safe(cell_text(v)), w) for v, w in zip(row, widths, strict=True)
            ]
            _draw_row(doc, cells, widths, y)
            doc.set_y(y + self.ROW_H)

    def finish(self) -> None:
        if not self._doc.widths:
            self._layout([])
        self._sink.write(bytes(self._doc.output()))

    def _safe(self, text: str) -> str:
        text = CONTROL_CHARS.sub(" ", text[:2000])
        if text.isascii() or not self._glyphs:
            return text
        return "".join(ch if ord(ch) in self._glyphs else "?" for ch in text)

    def _fit(self, text: str, width: float) -> str:
        room = width - 2
        doc = self._doc
        if len(text) <= 8 or doc.get_string_width(text) <= room:
            return text
        # Estimate from the average glyph width, then shorten until it fits.
        cut = max(1, int(len(text) * room / doc.get_string_width(text)))
        while cut > 1 and doc.get_string_width(text[:cut] + "…") > room:
            cut -= 1
        return text[:cut] + "…"
