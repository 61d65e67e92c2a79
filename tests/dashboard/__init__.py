"""Helpers of the dashboard tests: signing in, and reading a page the way the tests assert on
it (a small DOM from the standard library's HTML parser: elements by id, attribute or tag, the
figures' `data-value` hooks, a table's cells, a page's forms)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    @property
    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text for c in self.children]
        return re.sub(r"\s+", " ", " ".join(parts)).strip()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        return [
            node
            for node in self.walk()
            if (tag is None or node.tag == tag)
            and all(node.attrs.get(k) == v for k, v in wanted.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert found, f"no <{tag or '*'}> with {attrs}"
        return found[0]

    def by_id(self, element_id: str) -> Node:
        return self.find(id=element_id)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    return builder.root


def figures(page: Node) -> dict[str, str]:
    """Every key figure of a page: its `data-figure` name → its `data-value`."""
    return {
        node.attrs["data-figure"]: node.attrs.get("data-value", "")
        for node in page.walk()
        if "data-figure" in node.attrs
    }


def table(page: Node, table_id: str) -> list[list[str]]:
    """The body rows of a table, each a list of its cells' text."""
    body = page.by_id(table_id).find("tbody")
    return [
        [cell.text for cell in row.children if isinstance(cell, Node) and cell.tag in ("td", "th")]
        for row in body.children
        if isinstance(row, Node) and row.tag == "tr"
    ]


def post_forms(page: Node) -> list[Node]:
    return [form for form in page.find_all("form") if form.attrs.get("method") == "post"]


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Sign in as a browser does: load the form (and its cookie), post the key with its token."""
    form = await client.get("/dashboard/login")
    assert form.status_code == 200, form.text
    return await client.post(
        "/dashboard/login", data={"api_key": key, "csrf_token": csrf_of(form.text)}
    )


async def signed_in(client: httpx.AsyncClient, key: str) -> str:
    """Sign in and return the session's CSRF token, as the overview's forms carry it."""
    response = await sign_in(client, key)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"
    overview = await client.get("/dashboard")
    assert overview.status_code == 200, overview.text
    return csrf_of(overview.text)


def bearer(headers: dict[str, str]) -> str:
    """The key of an `Authorization: Bearer` header (as the factories return keys)."""
    return headers["Authorization"].removeprefix("Bearer ")
