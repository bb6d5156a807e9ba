"""/docs, /redoc and /openapi.json: a valid spec of every route, pages that work offline."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture(scope="module")
def spec(app):
    return app.test_client().get("/openapi.json").get_json()


def test_spec_is_valid_openapi_3(spec):
    assert spec["openapi"] == "3.0.3"
    validate(spec)


def api_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route of the api blueprint."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api."):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_every_route_is_documented_and_nothing_else(app, spec):
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == api_routes(app)


def test_path_parameters_match_the_route_variables(spec):
    """A mismatch makes 'Try it out' request the literal /items/%7Bitem_id%7D."""
    for path, ops in spec["paths"].items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == in_path, path


def test_try_it_out_request_works(client, data, spec):
    """What Swagger UI sends for the documented example, with a real key filled in."""
    key = next(iter(data))
    op = spec["paths"]["/items/{item_id}"]["get"]
    url = "/items/{item_id}".replace("{item_id}", key)
    r = client.get(url, headers={"Accept": next(iter(op["responses"]["200"]["content"]))})
    assert r.status_code == 200 and r.get_json()["value"] == data[key]


def test_docs_redirects_to_the_page(client):
    r = client.get("/docs")
    assert r.status_code == 308 and r.headers["Location"].endswith("/docs/")


@pytest.mark.parametrize("page", ["/docs/", "/redoc"])
def test_pages_load_only_local_assets(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    html = r.get_data(as_text=True)
    assert "https://" not in html and "http://" not in html
    assets = ASSET.findall(html)
    assert assets
    for asset in assets:
        assert asset.startswith("/"), asset
        with client.get(asset) as response:
            assert response.status_code == 200, asset


def test_swagger_ui_is_the_vendored_current_one(client):
    html = client.get("/docs/").get_data(as_text=True)
    assert "/static/swagger-ui/swagger-ui-bundle.js" in html
    assert "let auth_config = {};" in html
    with client.get("/static/swagger-ui/swagger-ui-bundle.js") as r:
        assert '"5.35.0"' in r.get_data(as_text=True)


def test_docs_page_ignores_a_foreign_spec_url(client):
    html = client.get("/docs/?url=https://evil.example/spec.json").get_data(as_text=True)
    assert "evil.example" not in html
    assert 'url: "/openapi.json"' in html
    # Swagger UI 5 reads ?url= only when queryConfigEnabled is set; flasgger never sets it.
    assert "queryConfigEnabled" not in html


def test_redoc_blocks_remote_images_and_connections(client):
    csp = client.get("/redoc").headers["Content-Security-Policy"]
    assert "img-src 'self' data: blob:" in csp and "connect-src 'self'" in csp
    assert 'Redoc.init("/openapi.json"' in client.get("/redoc").get_data(as_text=True)
