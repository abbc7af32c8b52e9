"""Normalisation of command output before runners are compared: what legitimately differs from
one run to the next (ids, times, durations) becomes a placeholder, and nothing else changes.

Ids are replaced *reference-preservingly*: the first sandbox id a scenario meets becomes
``<sbx:1>``, the second ``<sbx:2>``, and the same id is the same placeholder in every later step,
so ``create`` printing ``sbx_a`` and ``get`` printing ``sbx_a`` stay visibly the same object (and
a ``get`` that answered about another sandbox would not). The harness seeds each step with its
command line first, so ids given as arguments are numbered in the same order on every runner.

Deliberate differences between local and hosted that show up in every output (the region name,
the organization's name) are normalised here too, each with the docs/divergences.md row that
allows it; anything else that differs must be marked in the scenario itself.
"""
from __future__ import annotations

import copy
import re

# Prefixes of the hosted id families (localsb/api/models.py PREFIX, reference/hosted-api.md):
# sandboxes, snapshots, checkpoints, executions (exec_; the wire doc's recordings show exe_),
# jobs, events, runtimes, streams, organizations, projects, keys.
ID_RE = re.compile(r"\b(sbx|snp|ckpt|exec|exe|job|evt|srt|strm|stream|org|proj|key)_[A-Za-z0-9]{3,}\b")
ISO_RE = re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
# toLocaleString() in en-US: "1/1/2030, 12:00:00 AM" (pause's auto-terminate line).
LOCALE_TIME_RE = re.compile(r"\b\d{1,2}/\d{1,2}/\d{4},? \d{1,2}:\d{2}:\d{2}(?:\s?[AP]M)?")
# fs ls -l dates, ls-style: "Nov 26 07:10" or "Jan  1  2025".
LS_DATE_RE = re.compile(r"\b(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +\d{1,2} +(?:\d{2}:\d{2}|\d{4})\b")
# Durations the CLIs print: "in 12ms", "12ms", "1.2s" after "in".
MS_RE = re.compile(r"\b\d+(?:\.\d+)?ms\b")
IN_SECONDS_RE = re.compile(r"\bin \d+(?:\.\d+)?s\b")
# job logs' local "HH:MM:SS " line prefix.
CLOCK_RE = re.compile(r"(?m)^\d{2}:\d{2}:\d{2} ")
# Table layout: cell padding and rule lengths follow the widest cell, which a placeholder changes;
# so runs of spaces after text become one space (indentation at the start of a line stays).
SPACES_RE = re.compile(r"(?<=\S) {2,}")
RULE_RE = re.compile(r"─{2,}")
# Capability URLs of streams and downloads carry tokens and ports: their shape is compared, not
# their bytes.
URL_RE = re.compile(r"\b(?:https?|file)://[^\s\"'`)]+")

# JSON keys whose values are durations or clock readings.
DURATION_KEYS = {"durationMs"}
# docs/divergences.md "Stream URLs": the local engine has no stream service, so local executions
# and jobs carry no stream URLs; the keys, and the human lines that show them, are left out of
# every runner's output before comparing.
STREAM_URL_KEYS = {"stdoutStreamUrl", "stderrStreamUrl"}
STREAM_URL_LINE_RE = re.compile(r"^\s*(?:Stdout|Stderr|Stream \((?:stdout|stderr)\)):\s+<stream-url>$")
# docs/divergences.md "CLI name": hints and templates name the CLI that prints them.
CLI_NAME_RE = re.compile(r"\b(?:localsb|agentuity|bunx @agentuity/cli) cloud (sandbox|sb|ssh)\b")
# docs/divergences.md "Region": local says `local`, mockcloud and the hosted service a real region.
REGION_KEYS = {"region"}
# docs/divergences.md "Organizations in output": the org's name and slug depend on the client's
# organization (local: org_local; mockcloud: one per scenario), so they are placeholders.
ORG_NAME_KEYS = {"orgName"}
ORG_SLUG_KEYS = {"orgSlug"}
FULL_NAME_RE = re.compile(r"^@[^/]+/")


class Normalizer:
    """Reference-preserving normalisation of one runner's outputs over one scenario."""

    def __init__(self, context: dict | None = None, region: str | None = None):
        # context: literal runner-specific strings (server URL, the org's name) -> placeholders.
        self.context = dict(context or {})
        self.region = region
        self.ids: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def fork(self) -> "Normalizer":
        """A copy whose numbering does not affect this one (for fields not compared)."""
        n = Normalizer(self.context, self.region)
        n.ids, n.counts = dict(self.ids), dict(self.counts)
        return n

    # ids -----------------------------------------------------------------------------------------
    def _id(self, m: re.Match) -> str:
        raw = m.group(0)
        if raw not in self.ids:
            kind = m.group(1)
            if kind == "exe":
                kind = "exec"
            if kind == "stream":
                kind = "strm"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.ids[raw] = f"<{kind}:{self.counts[kind]}>"
        return self.ids[raw]

    def seed(self, text: str) -> None:
        """Number the ids of ``text`` (a step's command line) without producing output."""
        ID_RE.sub(self._id, text)

    # text ----------------------------------------------------------------------------------------
    def text(self, s: str, vary: tuple = (), layout: bool = True) -> str:
        """``layout``: also even out table padding (human output, not JSON string values)."""
        if not isinstance(s, str):
            return s
        for pattern in vary:
            s = re.sub(pattern, "<varies>", s)
        s = URL_RE.sub(lambda m: self._url(m.group(0)), s)
        for literal in sorted(self.context, key=len, reverse=True):
            if literal:
                s = s.replace(literal, self.context[literal])
        s = CLI_NAME_RE.sub(r"<cli> cloud \1", s)
        s = ISO_RE.sub("<time>", s)
        s = LOCALE_TIME_RE.sub("<time>", s)
        s = LS_DATE_RE.sub("<date>", s)
        s = CLOCK_RE.sub("<clock> ", s)
        s = MS_RE.sub("<ms>", s)
        s = IN_SECONDS_RE.sub("in <ms>", s)
        s = ID_RE.sub(self._id, s)
        if self.region:
            s = re.sub(rf"(Region:\s+){re.escape(self.region)}\b", r"\1<region>", s)
            s = re.sub(rf"│ {re.escape(self.region)}(\s*)│", r"│ <region>\1│", s)
        if not layout:
            return s
        # Blank lines are layout too (the official CLI ends some tables with one, starts some
        # headings with one): they are left out, with trailing spaces.
        lines = [SPACES_RE.sub(" ", RULE_RE.sub("─", line)).rstrip() for line in s.split("\n")
                 if line.strip() and not STREAM_URL_LINE_RE.match(line)]
        return "\n".join(lines)

    def _url(self, url: str) -> str:
        # What kind of URL it is stays visible; host, port and tokens do not.
        if "/streams/" in url or "stream" in url.split("?")[0].rsplit("/", 1)[-1]:
            return "<stream-url>"
        return "<url>"

    # JSON ----------------------------------------------------------------------------------------
    def json(self, obj, vary: tuple = (), vary_text: tuple = (), drop: tuple = ()):
        """Normalise parsed JSON; keys are visited in sorted order, so that numbering does not
        depend on the order a client happened to print keys in. ``drop``: keys removed."""
        vary = set(vary)
        dropped = STREAM_URL_KEYS | set(drop)

        def walk(v, key=None, parent_key=None):
            if isinstance(v, dict):
                out = {}
                for k in sorted(v):
                    if k not in dropped:
                        out[k] = walk(v[k], k, key)
                return out
            if isinstance(v, list):
                return [walk(x, None, key) for x in v]
            if key in vary:
                return "<varies>"
            if key in DURATION_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
                return "<ms>"
            if key in REGION_KEYS and isinstance(v, str) and v and v == self.region:
                return "<region>"
            if isinstance(v, str) and (key in ORG_NAME_KEYS or (key == "name" and parent_key == "org")):
                return "<org-name>"
            if isinstance(v, str) and (key in ORG_SLUG_KEYS or (key == "slug" and parent_key == "org")):
                return "<org-slug>"
            if isinstance(v, str) and key == "fullName":
                v = FULL_NAME_RE.sub("@<org-slug>/", v)
            if isinstance(v, str):
                return self.text(v, vary_text, layout=False)
            return v

        return walk(copy.deepcopy(obj))

    def value(self, obj, vary: tuple = (), vary_text: tuple = (), drop: tuple = (), drop_lines: tuple = ()):
        """Normalise a Result field: JSON (dict/list) or text; ``drop_lines``: regexes of
        normalised lines to leave out."""
        if isinstance(obj, (dict, list)):
            return self.json(obj, vary, vary_text, drop)
        text = self.text(obj, tuple(vary_text))
        if drop_lines:
            text = "\n".join(line for line in text.split("\n")
                              if not any(re.search(p, line) for p in drop_lines))
        return text
