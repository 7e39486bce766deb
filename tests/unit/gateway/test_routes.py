"""The routing table and the OpenAPI document generated from it."""

from agenda.gateway.routes import LOCAL_ROUTES, ROUTES, RouteTable, openapi_document


def test_matching_by_method_and_path() -> None:
    table = RouteTable(ROUTES)
    route, _ = table.match("GET", "/v1/events/0123")
    assert route is not None
    assert (route.path, route.service) == ("/v1/events/{event_id}", "users")
    route, _ = table.match("post", "/v1/events/0123/respond")
    assert route is not None
    assert route.path == "/v1/events/{event_id}/respond"


def test_wrong_method_lists_the_allowed_ones_and_unknown_paths_none() -> None:
    table = RouteTable(ROUTES)
    assert table.match("PUT", "/v1/events/x") == (None, ["DELETE", "GET", "PATCH"])
    assert table.match("GET", "/v1/nope") == (None, [])
    assert table.match("GET", "/v1/events/x/y") == (None, [])
    assert table.match("GET", "/v1/calendarXics") == (None, [])  # the dot is literal


def test_only_register_and_login_are_public_backend_routes() -> None:
    public = {(r.method, r.path) for r in ROUTES if r.public}
    assert public == {("POST", "/v1/auth/register"), ("POST", "/v1/auth/login")}


def test_openapi_lists_every_route_with_security() -> None:
    doc = openapi_document((*ROUTES, *LOCAL_ROUTES))
    assert doc["openapi"].startswith("3.")
    for route in (*ROUTES, *LOCAL_ROUTES):
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"]
        assert ("security" in op and op["security"] == []) == route.public
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    respond = doc["paths"]["/v1/events/{event_id}/respond"]["post"]
    assert respond["parameters"][0] == {
        "name": "event_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    assert "429" in doc["paths"]["/v1/auth/login"]["post"]["responses"]


def test_openapi_documents_every_success_body_and_the_errors_each_route_can_give() -> None:
    doc = openapi_document((*ROUTES, *LOCAL_ROUTES))
    for route in (*ROUTES, *LOCAL_ROUTES):
        responses = doc["paths"][route.path][route.method.lower()]["responses"]
        assert "default" not in responses  # every status is named, so an undocumented one is a failure
        if route.success != 204:
            assert responses[str(route.success)]["content"][route.content_type]["schema"], route.path
        assert ("401" in responses) == (not route.public or route.path == "/v1/auth/login"), route.path
        if "{" in route.path:
            assert "404" in responses, route.path
        if route.body is not None:
            assert {"400", "413", "415"} <= set(responses), route.path
    membership = doc["paths"]["/v1/groups/{group_id}/membership"]["post"]["responses"]
    assert {"200", "204"} <= set(membership)
    links = doc["paths"]["/v1/events"]["post"]["responses"]["201"]["links"]
    operation_ids = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert {link["operationId"] for link in links.values()} <= operation_ids


def test_request_schemas_state_the_limits_the_services_enforce() -> None:
    doc = openapi_document(ROUTES)
    register = doc["paths"]["/v1/auth/register"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert register["properties"]["password"]["minLength"] == 8
    assert register["properties"]["username"]["pattern"] == "^[a-z0-9_.-]{3,32}$"
    event = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert event["properties"]["title"]["maxLength"] == 200
    assert event["properties"]["description"]["maxLength"] == 10_000
    assert event["additionalProperties"] is False
