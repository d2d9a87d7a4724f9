"""The interactive docs page and the served OpenAPI document.

`/docs` must work with no internet: the page is Swagger UI and every script and
stylesheet it names is served by FastK itself.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests

from fastk_testlib import OPENAPI_PATH


class AssetParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.scripts.append(a["src"])
            else:
                self.inline_scripts += 1
        elif tag == "link" and a.get("href"):
            self.links.append(a["href"])


def test_docs_page_is_swagger_ui_and_assets_load(server):
    with requests.Session() as s:
        page = s.get(server.http_url + "/docs", timeout=30, allow_redirects=True)
        assert page.status_code == 200, page.text[:300]
        assert page.headers["content-type"].startswith("text/html"), page.headers
        html = page.text
        assert 'id="swagger-ui"' in html or "id='swagger-ui'" in html, html[:1000]
        parser = AssetParser()
        parser.feed(html)
        assert any("swagger-ui-bundle" in src for src in parser.scripts), parser.scripts
        assert parser.links, "no stylesheet linked"

        origin = urlsplit(server.http_url).netloc
        assets = parser.scripts + parser.links
        bodies = {}
        for ref in assets:
            url = urljoin(page.url, ref)
            # Offline means same origin: nothing may come from a CDN.
            assert urlsplit(url).netloc == origin, f"{ref} is not served by FastK"
            r = s.get(url, timeout=30)
            assert r.status_code == 200, f"{url}: {r.status_code}"
            assert len(r.content) > 0, f"{url} is empty"
            bodies[ref] = r

        bundle = next(r for ref, r in bodies.items() if "swagger-ui-bundle" in ref)
        assert "javascript" in bundle.headers["content-type"], bundle.headers
        assert b"SwaggerUIBundle" in bundle.content
        css = [r for ref, r in bodies.items() if ref.endswith(".css")]
        assert css and all("text/css" in r.headers["content-type"] for r in css)

        # The page points Swagger UI at FastK's own document (in an inline script or
        # in swagger-initializer.js).
        config_text = html + "".join(
            r.text for ref, r in bodies.items() if ref.endswith(".js") and "bundle" not in ref
            and "preset" not in ref
        )
        assert "openapi.json" in config_text


def test_openapi_json_equals_committed_document(server):
    assert OPENAPI_PATH.exists(), "openapi/openapi.json is not committed"
    committed = json.loads(OPENAPI_PATH.read_text())
    r = requests.get(server.http_url + "/openapi.json", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    served = r.json()
    assert served == committed, (
        "GET /openapi.json differs from openapi/openapi.json; regenerate the file "
        "(UPDATE_OPENAPI=1 cargo test)"
    )
    assert served["openapi"].startswith("3.1")
    paths = served["paths"]
    for p in ("/health", "/inventory", "/v1/kline/series",
              "/v1/kline/{symbol}/{timeframe}/records", "/v1/scalar/series"):
        assert p in paths, p
