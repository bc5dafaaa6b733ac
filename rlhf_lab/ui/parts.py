"""Building blocks of the raters: escaping, messages, the keyboard-shortcut widget and the flag panel.

Keyboard shortcuts use a tiny custom widget (anywidget) whose browser side is `widgets/keys.js`. The browser sends
each key press as a custom message `{"type": "key", "key": "1"}` (not a synced trait, so quick presses are never
merged or lost); `KeyCatcher` hands the key to a Python callback. Shortcuts are optional: where anywidget is not
installed `make_key_catcher` returns None, and where the frontend cannot load custom widgets the box simply does
not render. The buttons work either way.
"""

from __future__ import annotations

import html
import re
import string
from bisect import bisect_left
from importlib.resources import files
from typing import Callable

import ipywidgets as w
import sqlalchemy as sa
import traitlets

from rlhf_lab.feedback.drafts import DraftBook, fingerprint, saved_words
from rlhf_lab.feedback.records import FLAGS, Response

__all__ = ["LETTERS", "asset", "make_key_catcher", "text_html", "markdown_html", "reply_html", "style_widget",
           "notify", "say", "store_trouble", "say_store_trouble", "read_only_note", "embolden", "reply_card",
           "FlagPanel"]

try:
    import anywidget
except ImportError:  # shortcuts are optional; the buttons work without them
    anywidget = None

LETTERS = string.ascii_uppercase


def asset(name: str) -> str:
    """The text of a browser-side file shipped in the package `rlhf_lab.widgets` (e.g. "keys.js", "raters.css")."""
    return files("rlhf_lab.widgets").joinpath(name).read_text(encoding="utf-8")


if anywidget is not None:

    class KeyCatcher(anywidget.AnyWidget):
        """A focusable box ("keys off: click here to use the keys · 1 = A, ...") that forwards key presses to the
        kernel, and says whether keys are on.

        `shortcuts` lists the keys the browser forwards (lower case, or names such as "Enter"); other keys keep their
        usual meaning. Register handlers with `on_key(callback)`; each is called with the key as a string.
        """

        _esm = asset("keys.js")
        shortcuts = traitlets.List(traitlets.Unicode(), default_value=[]).tag(sync=True)
        hint = traitlets.Unicode("").tag(sync=True)

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._key_callbacks: list[Callable[[str], object]] = []
            self.on_msg(self._on_frontend_msg)

        def on_key(self, callback: Callable[[str], object]) -> None:
            """Call `callback(key)` for every key message from the browser."""
            self._key_callbacks.append(callback)

        def _on_frontend_msg(self, _widget, content, _buffers) -> None:
            """Handle a custom message from keys.js; anything but a well-formed key message is ignored."""
            if not isinstance(content, dict) or content.get("type") != "key":
                return
            key = content.get("key")
            if isinstance(key, str) and key in self.shortcuts:
                for callback in self._key_callbacks:
                    callback(key)

else:
    KeyCatcher = None


def make_key_catcher(on_key: Callable[[str], object], keys, hint: str):
    """A `KeyCatcher` wired to `on_key`, or None where anywidget is missing (then the rater has no shortcuts)."""
    if KeyCatcher is None:
        return None
    catcher = KeyCatcher(shortcuts=list(keys), hint=hint)
    catcher.on_key(on_key)
    return catcher


def text_html(text: str, css_class: str) -> str:
    """Untrusted text (a prompt, a model reply) as inert HTML: escaped, line breaks and spaces kept."""
    return (f'<div class="{css_class}" style="white-space: pre-wrap; overflow-wrap: anywhere;">'
            f"{html.escape(text)}</div>")


def style_widget() -> w.HTML:
    """The raters' stylesheet (widgets/raters.css) as a <style> element; plain HTML, so no custom widget needed."""
    return w.HTML(f"<style>{asset('raters.css')}</style>")


def notify(callbacks: list, message: w.HTML, *args) -> None:
    """Call each callback with `args`; a failing one is reported in `message` and re-raised (so it is not hidden)."""
    for callback in list(callbacks):
        try:
            callback(*args)
        except Exception as err:
            say(message, f"callback {getattr(callback, '__name__', callback)!r} failed: {err!r}", error=True)
            raise


def say(message: w.HTML, text: str, error: bool = False) -> None:
    """Show `text` (escaped) in a message area, red for errors."""
    css = "rlhf-message-error" if error else "rlhf-message-info"
    message.value = f'<span class="{css}">{html.escape(text)}</span>' if text else ""


def store_trouble(err: BaseException, failed: str = "Not saved") -> str | None:
    """What went wrong in a store call, as one line for a message area that says how to fix it (`failed` starts it:
    "Not saved", "Not undone"); None when `err` is not the store's trouble (a bug: the caller raises it again). A
    ValueError (a bad or repeated judgment) is the store's own message."""
    if isinstance(err, ValueError):
        return str(err)
    if isinstance(err, PermissionError):  # a read-only file, or a class store's row-level security
        fix = (" Copy the file somewhere you may write and open the copy, or ask whoever shared it."
               if "read-only" in str(err) else "")
        return f"{failed}: {err}.{fix}"
    if not isinstance(err, (sa.exc.SQLAlchemyError, OSError)):
        return None
    cause = " ".join(str(getattr(err, "orig", None) or err).split("[SQL:")[0].split())[:160]
    low = cause.lower()
    if "locked" in low or "busy" in low:
        how = "the store is busy (another kernel or program is writing to it); try again in a moment"
    elif "readonly" in low or "read-only" in low:
        how = "the store's file became read-only to you; open a copy you may write, then make the rater again"
    elif any(s in low for s in ("no such table", "unable to open", "no such file", "disk i/o", "not a database")):
        how = ("the store's file was moved or deleted; open the store again (rerun the cell that opens it), then "
               "make the rater again")
    elif "full" in low:
        how = "the disk is full; free some space and try again"
    else:
        how = "the database failed; check that the store is reachable (a class store: its server, your network)"
    return f"{failed}: {how} ({cause})."


def say_store_trouble(message, err: BaseException, failed: str) -> None:
    """Show a failed store call in the `message` area in one line (`store_trouble`'s words, starting with `failed`);
    an error that is not the store's (a bug) is shown, then raised again."""
    text = store_trouble(err, failed)
    say(message, text or f"{failed}: {err!r}", error=True)
    if text is None:
        raise err


def read_only_note(store, what: str) -> str:
    """A line saying that `store` is read-only to this user and `what` ("judgments", "flags") cannot be saved; ""
    for a store that can be written."""
    if not getattr(store, "read_only", False):
        return ""
    path = str(getattr(store, "url", store)).removeprefix("sqlite:///")
    return (f"This store ({path}) is read-only to you: you can look, but {what} cannot be saved. Copy the file "
            "somewhere you may write and open the copy, or ask whoever shared it to let you write.")


_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:\n```|$)", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD_OPEN = re.compile(r"(?=\*\*\S)")  # where a bold run may open: ** before a non-space
_BOLD_CLOSE = re.compile(r"(?<=\S)(?=\*\*)")  # where it may close: ** after a non-space
_NEWLINE = re.compile("\n")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_HEADING = re.compile(r"^#{1,6} +(.+)$", re.M)
_BULLET = re.compile(r"^( *)[-*] +", re.M)
_TABLE = re.compile(r"(?:^\|.*\|[ \t]*(?:\n|$))+", re.M)


def embolden(text: str) -> str:
    """`**bold**` -> `<strong>bold</strong>`, as `re.sub(r"\\*\\*(?=\\S)(.+?)(?<=\\S)\\*\\*", ...)` does (a run opens at
    ** before a non-space and closes at the nearest ** after a non-space on the same line), in linear time: that
    regex searches to the end of the line from every opening that never closes, quadratic on "**a " * 10000."""
    closes = [m.start() for m in _BOLD_CLOSE.finditer(text)]
    if not closes:
        return text
    breaks = [m.start() for m in _NEWLINE.finditer(text)]
    out, done = [], 0
    for m in _BOLD_OPEN.finditer(text):
        start = m.start()
        if start < done:
            continue
        k = bisect_left(closes, start + 3)  # at least one character inside
        if k == len(closes):
            break  # no closing after this opening, so none after any later one
        end, b = closes[k], bisect_left(breaks, start + 2)
        if b < len(breaks) and breaks[b] < end:
            continue  # the line ends first
        out += [text[done:start], "<strong>", text[start + 2:end], "</strong>"]
        done = end + 2
    return "".join(out) + text[done:]


def markdown_html(text: str) -> str:
    """The markdown a chat model writes, shown as it reads: **bold**, *italic*, `code`, fenced code, headings,
    bullets, and tables kept in columns. Safe for any text: everything is escaped first, and only fixed tags without
    attributes are added around the escaped text."""
    out = html.escape(text.replace("\x00", "\u2400"))  # a NUL shows as ␀; \x00 marks the kept blocks below
    blocks: list[str] = []

    def keep(fragment: str) -> str:  # code and tables: no further formatting inside
        blocks.append(fragment)
        return f"\x00{len(blocks) - 1}\x00"

    out = _FENCE.sub(lambda m: keep(f"<pre><code>{m.group(1)}</code></pre>"), out)
    out = _TABLE.sub(lambda m: keep(f'<pre class="rlhf-table">{m.group(0).rstrip()}</pre>'), out)
    out = _INLINE_CODE.sub(lambda m: keep(f"<code>{m.group(1)}</code>"), out)
    out = _HEADING.sub(r"<strong>\1</strong>", out)
    out = embolden(out)
    out = _ITALIC.sub(r"<em>\1</em>", out)
    out = _BULLET.sub(lambda m: m.group(1) + "• ", out)
    return re.sub("\x00(\\d+)\x00", lambda m: blocks[int(m.group(1))], out)


def reply_html(text: str, css_class: str = "rlhf-reply", markdown: bool = True) -> str:
    """A model reply as HTML: formatted markdown (`markdown_html`) or the raw text, escaped either way; an empty
    reply says so instead of showing a blank sliver."""
    if not text.strip():
        return f'<div class="{css_class} rlhf-empty"><i>(empty reply)</i></div>'
    body = markdown_html(text) if markdown else html.escape(text)
    return f'<div class="{css_class}" style="white-space: pre-wrap; overflow-wrap: anywhere;">{body}</div>'


def reply_card(label: str, response: Response, markdown: bool = True) -> w.VBox:
    """One reply under its label ("A"), escaped (markdown formatted), in a box that shares the row with its
    neighbours."""
    return w.VBox([w.HTML(f'<div class="rlhf-label">{html.escape(label)}</div>'),
                   w.HTML(reply_html(response.text, markdown=markdown))],
                  layout=w.Layout(flex="1 1 0", min_width="240px"))


class FlagPanel:
    """Flags (harmful, biased, off topic, ...) and a comment on one reply; use it alone or beside a rater.

    `show_responses(responses)` sets the replies to choose from (labelled A, B, ...); `attach(rater)` follows the
    rater's current item. The form shows the annotator's saved flags and comment for the chosen reply (after a
    kernel restart too, and whenever another reply is chosen). `submit()` stores the ticked flags (none ticked =
    "looked, nothing wrong"); saving what is saved already writes nothing, so a double click changes nothing.
    Changes not saved yet are saved for the reply they were made for when the learner chooses another reply or the
    rater moves on; a form left as it was loaded saves nothing, so it never replaces saved flags.
    Every change not saved yet is also kept in the annotator's drafts file (`draft_book`, see `feedback.drafts`,
    under the key "flags:<reply id>") until the flags are saved, so a kernel crash or restart loses no tick or
    comment: a panel made later shows them again for that reply and says so.
    """

    def __init__(self, store, annotator: str, responses: list[Response] | None = None):
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError("annotator must be a non-empty string such as 'alice' (who is flagging?)")
        self.store, self.annotator = store, annotator
        self.read_only = read_only_note(store, "flags")  # "" when the store can be written
        self.on_submit: list = []
        self.reply = w.Dropdown(description="reply", options=[])
        self.checkboxes = {flag: w.Checkbox(description=flag.replace("_", " "), value=False, indent=False,
                                            layout=w.Layout(width="auto"))
                           for flag in FLAGS}
        self.comment = w.Textarea(placeholder="comment (optional)", layout=w.Layout(width="100%"))
        self.submit_button = w.Button(description="save flags", icon="flag", button_style="warning")
        self.submit_button.on_click(lambda _b: self.submit())
        self.message = w.HTML()
        self.widget = w.VBox([w.HTML("<b>Flag a reply</b>"), self.reply, w.HBox(list(self.checkboxes.values())),
                              self.comment, self.submit_button, self.message])
        self._responses: dict = {}
        self._saved = (frozenset(), "")  # what the form was loaded with: the chosen reply's saved flags and comment
        self._quiet = False  # True while the panel itself sets the dropdown
        self._filling = False  # True while the panel itself fills the form (no draft is saved then)
        self.draft_book = DraftBook.for_store(store, annotator)  # changes not saved, kept for a restart
        self.reply.observe(self._on_reply, names="value")
        for widget in (*self.checkboxes.values(), self.comment):
            widget.observe(self._save_draft, names="value")
        self.show_responses(responses or [])
        if self.read_only:
            say(self.message, self.read_only, error=True)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @property
    def changed(self) -> bool:
        """Whether the form holds changes not saved for the chosen reply (what choosing another reply or the rater
        moving on saves)."""
        return self.reply.value is not None and not self.read_only and self._form() != self._saved

    def _form(self) -> tuple:
        return frozenset(f for f, box in self.checkboxes.items() if box.value), self.comment.value

    def _choose(self, response_id) -> None:
        self._quiet = True
        try:
            self.reply.value = response_id
        finally:
            self._quiet = False

    def show_responses(self, responses: list[Response]) -> None:
        """Offer `responses` (labelled A, B, ...), the first chosen and its saved flags in the form. Changes not
        saved yet (the learner chose A or B first) are saved for the reply they were meant for, never dropped; the
        same replies again (a rater shows its item anew) leave such changes on screen, not saved."""
        if self.changed and [r.id for r in responses] == list(self._responses):
            return
        if self.changed:
            self.submit()
        self._responses = {r.id: r for r in responses}
        self._quiet = True
        try:
            self.reply.options = [(LETTERS[i] if len(responses) > 1 else "this reply", r.id)
                                  for i, r in enumerate(responses)]
        finally:
            self._quiet = False
        self._choose(responses[0].id if responses else None)
        self.submit_button.disabled = not responses or bool(self.read_only)
        saved = {label: self._saved_of(rid) for label, rid in self.reply.options}
        note = self._show(self.reply.value, saved.get(self.reply.label) if responses else None)
        flagged = [f"{label} {self._words(found[0])}" for label, found in saved.items() if found and any(found)]
        if flagged:
            note = (f"Flags you saved before: {'; '.join(flagged)} (choose a reply to see or change its flags). "
                    f"{note}").strip()
        if note:
            say(self.message, note)
        self._say_draft_trouble()

    def attach(self, rater) -> None:
        """Follow `rater`: whenever it shows an item, offer that item's replies (or the one reply it shows)."""
        def follow(item):
            self.show_responses([] if item is None else getattr(item, "responses", [item]))

        rater.on_show.append(follow)
        follow(rater.current)

    def _on_reply(self, change) -> None:
        """Another reply chosen: changes made for the one before are saved for it, then its saved flags show."""
        if self._quiet:
            return
        if change["old"] is not None and not self.read_only and self._form() != self._saved:
            if self.submit(response_id=change["old"]) is None:  # not saved: back to that reply, the form kept
                self._choose(change["old"])
                return
        note = self._show(self.reply.value, self._saved_of(self.reply.value) if self.reply.value is not None else None)
        if note:
            say(self.message, note)
        self._say_draft_trouble()

    def _saved_of(self, response_id) -> tuple | None:
        """The annotator's saved (flags, comment) on a reply; None when there are none (or the store failed: then
        the message area says so)."""
        try:
            found = self.store.judgment(self.annotator, f"flags:{response_id}")
        except Exception as err:
            say_store_trouble(self.message, err, "Your saved flags could not be read")
            return None
        return None if found is None else (frozenset(found["answer"]["flags"]), found["comment"])

    def _fill(self, saved: tuple | None, shown: tuple | None = None) -> None:
        """Show `shown` (flags, comment; default `saved`) in the form (None: an empty form) and remember `saved` as
        what is saved."""
        flags, comment = saved or (frozenset(), "")
        shown_flags, shown_comment = shown or (flags, comment)
        self._filling = True
        try:
            for flag, box in self.checkboxes.items():
                box.value = flag in shown_flags
            self.comment.value = shown_comment
        finally:
            self._filling = False
        self._saved = (frozenset(flags), comment)

    def _show(self, response_id, saved: tuple | None) -> str:
        """Fill the form for reply `response_id` (None: none) with its draft where one is kept for this reply's
        text, else with `saved`; returns what to say about a draft put back ("" when none was)."""
        entry = self.draft_book.get(f"flags:{response_id}") if self.draft_book and response_id is not None else None
        response = self._responses.get(response_id)
        answer = entry["answer"] if entry and response and entry.get("of") == fingerprint(response) else None
        flags = answer.get("flags") if isinstance(answer, dict) else None
        comment = answer.get("comment", "") if isinstance(answer, dict) else None
        if not isinstance(flags, list) or not all(f in FLAGS for f in flags) or not isinstance(comment, str):
            self._fill(saved)  # no draft, or one not made by this panel (edited by hand): the saved flags
            return ""
        self._fill(saved, (frozenset(flags), comment))
        if self._form() == self._saved:  # saved meanwhile (another kernel): nothing to put back
            self.draft_book.drop(f"flags:{response_id}")
            return ""
        return f"Your unsaved flags from {saved_words(entry['saved_at'])} are back: press save flags to keep them."

    def _save_draft(self, _change=None) -> None:
        """A checkbox or the comment changed: keep the form for a restart, or drop the draft when the form is back
        to what was loaded (trouble with the drafts file is said, never raised)."""
        response = self._responses.get(self.reply.value)
        if self._filling or self.draft_book is None or self.read_only or response is None:
            return
        flags, comment = self._form()
        answer = None if (flags, comment) == self._saved else {"flags": sorted(flags), "comment": comment}
        self.draft_book.put(f"flags:{response.id}", answer, fingerprint(response))
        self._say_draft_trouble()

    def _say_draft_trouble(self) -> None:
        trouble = self.draft_book.take_note() if self.draft_book is not None else ""
        if trouble:
            say(self.message, trouble, error=True)

    @staticmethod
    def _words(flags) -> str:
        return ", ".join(f.replace("_", " ") for f in FLAGS if f in flags) or "nothing wrong"

    def submit(self, flags=None, comment: str | None = None, response_id: int | None = None) -> int | None:
        """Store flags (default: the ticked boxes) and a comment (default: the form's) on a reply (default: the chosen
        one); returns the judgment id. Flagging a reply again changes your flags for it (one flag judgment per reply
        and person); the same flags and comment again write nothing. A store error is shown, the form kept."""
        flags = [f for f, box in self.checkboxes.items() if box.value] if flags is None else list(flags)
        comment = self.comment.value if comment is None else comment
        response_id = self.reply.value if response_id is None else response_id
        if response_id is None:
            say(self.message, "There is no reply to flag.", error=True)
            return None
        if self.read_only:
            say(self.message, self.read_only, error=True)
            return None
        try:
            before = self.store.judgment(self.annotator, f"flags:{response_id}")
            same = before is not None and (set(before["answer"]["flags"]), before["comment"]) == (set(flags), comment)
            judgment_id = before["id"] if same else self.store.record_flags(
                response_id, self.annotator, flags, comment, replace=before is not None)
        except Exception as err:
            say_store_trouble(self.message, err, "Flags not saved")
            return None
        if self.draft_book is not None:  # stored now: the draft is done with
            self.draft_book.drop(f"flags:{response_id}")
        if response_id == self.reply.value:
            self._fill((flags, comment))  # the form now shows what is saved
        label = dict((v, k) for k, v in self.reply.options).get(response_id, "the reply")
        if same:
            say(self.message, f"Already saved for {label}: {self._words(flags)}.")
            return judgment_id
        say(self.message, f"{'Changed your flags' if before else 'Saved'} for {label}: {self._words(flags)}.")
        answer = {"flags": flags, "comment": comment}
        notify(self.on_submit, self.message, self._responses.get(response_id, response_id), answer, judgment_id)
        return judgment_id
