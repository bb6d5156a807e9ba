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


def test_redoc_blocks_remote_images_and_connections(client):
    csp = client.get("/redoc").headers["Content-Security-Policy"]
    assert "img-src 'self' data: blob:" in csp and "connect-src 'self'" in csp
    assert 'Redoc.init("/openapi.json"' in client.get("/redoc").get_data(as_text=True)
