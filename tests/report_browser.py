"""Open an HTML report in headless Chromium and read back what its scripts drew (the DOM after load) and
what they logged (the page's console), with no dependency beyond Debian's `chromium` (`make chromium`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"  # where Debian's package (`make chromium`) puts it
# Headless and offline: nothing fetched, synced or updated, a fresh profile; the report embeds plotly.js.
# --disable-dev-shm-usage: a container's /dev/shm (64 MB in Docker) is too small for the renderer.
# --virtual-time-budget: load event, then timers and promises run on virtual time before the DOM is dumped.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
    "--dump-dom",
)
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\))?:?\d*\] (.*)$")
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def chromium() -> str:
    """The browser `make test` installs; missing is a failure, not a skip: the report would go unchecked."""
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not found:
        pytest.fail(f"chromium not found at {CHROMIUM} nor on PATH: run `make chromium` (`make test` does)")
    return found


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        """Every descendant with this tag and/or class, in document order."""
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                found.append(child)
            found.extend(child.find(tag, cls))
        return found

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self._stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(node)
        if tag not in _VOID:
            self._stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self._stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self._stack) - 1, 0, -1):  # tolerate an unclosed element inside
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data):
        if self._stack[-1].tag not in ("script", "style"):
            self._stack[-1].text += data


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


@dataclass
class RenderedPage:
    dom: Node
    console: list[str]  # every message the page logged, uncaught errors included


def render(page: Path, workdir: Path, timeout_s: float = 60.0) -> RenderedPage:
    """Load `page` from disk in a fresh headless Chromium profile; the DOM once its scripts have run."""
    profile = workdir / "chromium-profile"
    command = [chromium(), *FLAGS, f"--user-data-dir={profile}", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or "</html>" not in done.stdout:
        tail = "\n".join(done.stderr.splitlines()[-20:])
        raise AssertionError(f"chromium exited {done.returncode} without a DOM for {page}:\n{tail}")
    console = [m.group(1) for line in done.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return RenderedPage(dom=parse_html(done.stdout), console=console)


@dataclass
class Figure:
    """One plotly figure as the browser drew it."""

    title: str
    node: Node

    def traces(self, kind: str) -> list[Node]:
        """The drawn traces of one type ("scatter", "bars") in drawing order."""
        return [t for t in self.node.find("g", "trace") if kind in t.classes]

    def tick_labels(self, axis: str) -> list[str]:
        return [t.all_text() for t in self.node.find("g", f"{axis}tick")]

    def legend(self) -> list[str]:
        return [t.all_text() for t in self.node.find("text", "legendtext")]


def figures(dom: Node) -> dict[str, Figure]:
    """The page's drawn plotly figures by title (a figure its script did not draw has no SVG, so no title)."""
    drawn = {}
    for div in dom.find("div", "js-plotly-plot"):
        titles = [t.all_text() for t in div.find("text", "gtitle")]
        if div.find("svg", "main-svg") and titles:
            drawn[titles[0]] = Figure(titles[0], div)
    return drawn


def undrawn_figures(dom: Node) -> list[str]:
    """The ids of the page's plotly figures that hold no drawn SVG (their script failed or never ran)."""
    return [div.attrs.get("id", "?") for div in dom.find("div", "js-plotly-plot") if not div.find("svg", "main-svg")]


def path_points(node: Node) -> list[tuple[float, float]]:
    """The (x, y) vertices of an SVG path's `d` (absolute M/L commands, as plotly writes lines)."""
    numbers = [float(n) for n in _NUMBER.findall(node.attrs.get("d", ""))]
    return list(zip(numbers[0::2], numbers[1::2]))


def bar_height(node: Node) -> float:
    """The drawn height of one plotly bar: its path is "M x0,y0 V y1 H x1 V y0 Z"."""
    match = re.match(r"M([-\d.e]+),([-\d.e]+)V([-\d.e]+)H", node.attrs.get("d", ""))
    if not match:
        raise AssertionError(f"bar path d={node.attrs.get('d')!r} is not a drawn bar (M x,y V y H x ...)")
    return abs(float(match.group(2)) - float(match.group(3)))
