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


def _resolve(spec: dict, item: dict) -> dict:
    """item, or what its local $ref points at."""
    if "$ref" not in item:
        return item
    for part in item["$ref"].removeprefix("#/").split("/"):
        spec = spec[part]
    return spec


def test_path_parameters_match_the_route_variables(spec):
    """A mismatch makes 'Try it out' request the literal /items/%7Bitem_id%7D."""
    for path, ops in spec["paths"].items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for op in ops.values():
            params = [_resolve(spec, p) for p in op.get("parameters", [])]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == in_path, path


def test_try_it_out_request_works(client, data, spec):
    """What Swagger UI sends for the documented example, with a real key filled in."""
    key = next(iter(data))
    op = spec["paths"]["/items/{item_id}"]["get"]
    url = "/items/{item_id}".replace("{item_id}", key)
    r = client.get(url, headers={"Accept": next(iter(op["responses"]["200"]["content"]))})
    assert r.status_code == 200 and r.get_json()["value"] == data[key]


def test_docs_is_the_page_itself_not_a_redirect(client):
    """`curl /docs` showed werkzeug's HTML redirect page (308 to /docs/): both spellings
    serve the page now."""
    pages = [client.get(path) for path in ("/docs", "/docs/")]
    for r in pages:
        assert r.status_code == 200 and "Location" not in r.headers
        assert r.headers["Content-Security-Policy"] == pages[0].headers["Content-Security-Policy"]
    assert pages[0].get_data() == pages[1].get_data()
    assert b'id="swagger-ui"' in pages[0].get_data()


def test_root_lists_the_routes_as_json(app, client):
    """curl /, a client: JSON naming the docs and every route of the API."""
    for accept in (None, "*/*", "application/json"):
        r = client.get("/", headers={"Accept": accept} if accept else {})
        assert r.status_code == 200 and r.mimetype == "application/json"
        body = r.get_json()
        assert body["docs"] == {
            "swagger_ui": "/docs",
            "redoc": "/redoc",
            "openapi": "/openapi.json",
        }
        listed = {(route["path"], route["method"].lower()) for route in body["routes"]}
        assert api_routes(app) <= listed
        assert all(route["summary"] for route in body["routes"])
        assert r.headers["Vary"] == "Accept"


def test_root_sends_a_browser_to_the_docs(client):
    """A browser (HTML ranked above JSON) goes to /docs, with a bare redirect."""
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = client.get("/", headers={"Accept": browser})
    assert r.status_code == 302 and r.headers["Location"] == "/docs"
    assert r.get_data() == b"" and r.headers["Vary"] == "Accept"


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
    with client.get("/static/swagger-ui/swagger-ui-bundle.js") as r:
        assert '"5.35.0"' in r.get_data(as_text=True)


def test_docs_page_ignores_a_foreign_spec_url(client):
    html = client.get("/docs/?url=https://evil.example/spec.json").get_data(as_text=True)
    assert "evil.example" not in html
    assert 'data-spec="/openapi.json"' in html
    with client.get("/static/docs/swagger-init.js") as r:
        init = r.get_data(as_text=True)
    assert "url: root.dataset.spec" in init
    # Swagger UI 5 reads ?url= only when queryConfigEnabled is set; kv_app never sets it.
    assert "queryConfigEnabled" not in init


def test_docs_page_has_a_content_security_policy(client):
    """No inline script may run on /docs (the start-up script is a file), nothing remote."""
    csp = client.get("/docs/").headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "connect-src 'self'" in csp
    assert "<script>" not in client.get("/docs/").get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/flasgger_static/swagger-ui-bundle.js",
        "/flasgger_static/lib/jquery.min.js",
        "/apidocs/",
        "/apidocs/index.html",
        "/oauth2-redirect.html",
    ],
)
def test_only_what_the_docs_use_is_served(client, path):
    """flasgger's own Swagger UI 3.28 and jQuery 2.2.4 are flagged by scanners."""
    assert client.get(path).status_code == 404


def test_every_route_served_is_known(app):
    served = {rule.rule for rule in app.url_map.iter_rules()}
    assert served == {
        "/items/<item_id:item_id>",
        "/items/batch",
        "/healthz",
        "/readyz",
        "/",
        "/docs",
        "/docs/",
        "/redoc",
        "/openapi.json",
        "/static/<path:filename>",
        "/metrics",
    }


def test_spec_states_what_the_server_accepts(app, spec, data):
    """A fuzzer driven by the spec found schema-valid requests rejected."""
    item = spec["paths"]["/items/{item_id}"]["get"]
    assert set(item["responses"]) == {"200", "304", "400", "404", "406", "421", "503"}
    param = spec["components"]["parameters"]["ItemId"]["schema"]
    assert re.fullmatch(param["pattern"].strip("^$"), param["example"])
    assert param["example"] in data  # 'Try it out' answers 200
    batch = spec["paths"]["/items/batch"]["post"]
    assert set(batch["responses"]) == {"200", "400", "406", "408", "413", "421", "503"}
    ids = spec["components"]["schemas"]["BatchRequest"]["properties"]["ids"]
    assert ids["maxItems"] == app.config["MAX_BATCH"]
    assert ids["items"]["pattern"] == param["pattern"]
    assert ids["example"][0] in data


def test_each_error_has_its_own_example(spec):
    examples = {}
    for response in spec["components"]["responses"].values():
        example = response["content"]["application/json"]["example"]
        examples[example["status"]] = example
    assert sorted(examples) == [400, 404, 405, 406, 408, 413, 421, 503]
    assert examples[404]["error"] == "Not Found" and examples[413]["error"].endswith("Large")


def csp_of(client, page: str) -> dict[str, str]:
    policy = client.get(page).headers["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_redoc_is_as_strict_as_docs(client):
    """ReDoc's CSP had no default-src nor script-src (any script, inline too): now the
    same as /docs', plus its search worker (blob:); remote images (its CDN logo) and
    connections are blocked. tests/test_browser.py checks it renders under it."""
    docs, redoc = csp_of(client, "/docs"), csp_of(client, "/redoc")
    assert redoc.pop("worker-src") == "blob:"
    assert redoc == docs
    assert redoc["script-src"] == "'self'" and redoc["default-src"] == "'self'"
    assert redoc["img-src"] == "'self' data:" and redoc["connect-src"] == "'self'"
    html = client.get("/redoc").get_data(as_text=True)
    assert "<script>" not in html and 'data-spec="/openapi.json"' in html
    with client.get("/static/docs/redoc-init.js") as r:
        assert "root.dataset.spec" in r.get_data(as_text=True)


def test_lookups_come_first_health_last(spec):
    """The pages show tags in the spec's order: items, then health; the description
    says how to use the API."""
    assert [tag["name"] for tag in spec["tags"]] == ["items", "health"]
    used = {tag for ops in spec["paths"].values() for op in ops.values() for tag in op["tags"]}
    assert used == {"items", "health"}
    description = spec["info"]["description"]
    assert "GET /items/{id}" in description and "POST /items/batch" in description
    assert "Try it out" in description


def test_try_it_out_is_a_button(client):
    """With tryItOutEnabled the forms open at once and the button says 'Cancel': Swagger
    users look for 'Try it out'."""
    with client.get("/static/docs/swagger-init.js") as r:
        assert "tryItOutEnabled: true" not in r.get_data(as_text=True)
