"""rlhf_lab.loop.report: model text in a report's Markdown is shown as text, never as HTML or links."""

from __future__ import annotations

import markdown_it
import pandas as pd
import pytest

from rlhf_lab.loop.report import markdown_table, markdown_text

HOSTILE = ['<script>alert(1)</script>', '<img src=x onerror="alert(2)">', "[click](javascript:alert(3))",
           "![x](http://127.0.0.1/track.png)", "a | b\nc", "**bold** _it_ `code` # no heading & more"]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_reply_renders_as_its_own_text(text):
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(markdown_table(pd.DataFrame({"reply": [text]})))
    for tag in ("<script", "<img", "<a ", "<strong>", "<em>", "<code>", "<h1>"):
        assert tag not in html
    cell = html.split("<td>")[1].split("</td>")[0]  # one row, one cell: the pipe did not split it
    expected = text.replace("\n", " ").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert cell == expected.replace('"', "&quot;")


@pytest.mark.parametrize("text", HOSTILE)
def test_a_run_folder_name_in_the_heading_renders_as_its_own_text(text):
    """summary.md's heading names the run folder (a classmate's run can be named anything) and its policy."""
    markdown = f"# RLHF run: {markdown_text(text)}\n\nPolicy {markdown_text(text)}"
    html = markdown_it.MarkdownIt("commonmark").render(markdown)
    for tag in ("<script", "<img", "<a ", "<strong>", "<em>", "<code>"):
        assert tag not in html
    heading = html.split("<h1>")[1].split("</h1>")[0]
    expected = text.replace("\n", " ").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert heading == "RLHF run: " + expected.replace('"', "&quot;")


def test_write_report_given_a_runs_path_says_to_open_it(tmp_path):
    from rlhf_lab.loop.report import write_report

    with pytest.raises(TypeError, match=r"write_report needs an RLHFRun, got str .*: open it first, RLHFRun.open\("):
        write_report(str(tmp_path / "run"))  # AttributeError: 'str' object has no attribute 'path' before
