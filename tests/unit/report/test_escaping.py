"""Untrusted text on the pages: one escaping for every field in Markdown (no HTML, link, image or emphasis comes
through), and control characters, right-to-left overrides included, made visible in the Markdown and the HTML."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from harness.report.html import Table, esc, md
from harness.text import one_line, visible

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click me](javascript:alert(1))",
    "![tracker](https://evil.example/pixel.png)",
    "<https://evil.example>",
    "https://evil.example/x and www.evil.example",
    "mail me@evil.example or @someone",
    "`code` **bold** *em* _em_ ~~gone~~ $x^2$",
    "a | b \\| c \\",
    "&lt;b&gt; &amp; &#60;i&#62;",
    "line one\nline two\r\n| --- |",
    "admin\u202egnp.exe",
    "zero\u200bwidth \u2066isolate\u2069 \x1b[31mred\x1b[0m \x07bell",
]
RENDERER = MarkdownIt("commonmark").enable("table").enable("strikethrough")


def rendered_cell(text: str) -> str:
    """`text` as the only cell of a table, rendered as CommonMark with GitHub's tables: the cell's HTML."""
    page = RENDERER.render(f"| h |\n| --- |\n| {md(text)} |\n")
    cells = re.findall(r"<td>(.*?)</td>", page, flags=re.S)
    assert len(cells) == 1, page
    return cells[0]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_markdown_cell_renders_as_exactly_its_text(text):
    cell = rendered_cell(text)
    assert "<" not in cell.replace("&lt;", ""), cell  # no element at all: no script, image, link or emphasis
    assert html.unescape(cell) == one_line(text)


@pytest.mark.parametrize("text", HOSTILE)
def test_no_automatic_link_can_form(text):
    out = md(text)  # GitHub links a bare scheme://, www. and e-mail address: each is broken by a backslash
    for unescaped in (r"(?<!\\)://", r"(?i)www\.", r"(?<!\\)@"):
        assert re.search(unescaped, out) is None, out


def test_plain_text_is_left_as_it_is():
    for text in ("numpy-float32", "segment 3 (steps 15-19): distance 0.0051 > 0.0003", "pydoc_data.topics", "2.5x"):
        assert md(text) == text


@pytest.mark.parametrize("char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2069"])
def test_bidirectional_controls_are_visible_in_both_pages(char):
    text = f"champion{char}evil"
    code = f"\\u{ord(char):04x}"
    assert char not in md(text) and code in html.unescape(rendered_cell(text))
    assert char not in esc(text) and code in esc(text)


def test_html_escaping_leaves_no_markup():
    assert esc("<b onclick='x'>&") == "&lt;b onclick=&#x27;x&#x27;&gt;&amp;"


def test_visible_keeps_printable_text_and_whitespace():
    assert visible("héllo wörld ✓ 中文\tand\nnewline") == "héllo wörld ✓ 中文\tand\nnewline"
    assert visible("\x1b[2J") == "\\u001b[2J"
    assert one_line("a\n\nb\tc") == "a b c"


def test_an_empty_markdown_table_is_one_line_not_a_blank_row():
    table = Table("t", "Rejected attempts", ["date", "reason"], empty="none")
    assert table.markdown() == "**Rejected attempts**\n\nNone.\n"
