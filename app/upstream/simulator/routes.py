"""The upstream API paths (CONTRACT §2), as the simulator answers them.

Every call goes through `gate`, in this order: count it per operation (for
`GET /_simulator/requests`), check the bearer key (401), count it against the hourly request limit
(429), sleep `latency_ms`, then draw its faults: an error answers at once without doing the work, a
timeout sleeps `timeout_seconds` and answers 504, a lost response lets the work happen and then
answers 502. Bodies are parsed here rather than by FastAPI so that their errors use the upstream
envelope (400 for malformed JSON, 422 for a schema violation).

`/meta/info` is marked auth-optional in the spec; the simulator requires the key everywhere, since
every client of it sends one.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from app.upstream.simulator import envelope, views
from app.upstream.simulator.config import Operation
from app.upstream.simulator.errors import (
    BadRequest,
    GatewayTimeout,
    InjectedFault,
    InvalidRequest,
    LostResponse,
    Unauthorized,
)
from app.upstream.simulator.schemas import (
    CreateRequest,
    ForkRequest,
    HibernationTimeoutRequest,
    ListQuery,
    PreviewTokenRequest,
    SessionRequest,
    SpecsRequest,
    StartOptions,
)
from app.upstream.simulator.state import Simulator

router = APIRouter()

M = TypeVar("M", bound=BaseModel)


class Call:
    """One admitted upstream call and the fate drawn for its answer."""

    def __init__(self, simulator: Simulator, *, lose_response: bool) -> None:
        self.sim = simulator
        self._lose_response = lose_response

    def respond(self, data: dict[str, Any], status: int = 200) -> Response:
        if self._lose_response:
            raise LostResponse("Bad gateway")
        return envelope.success(data, status)

    def respond_raw(self, body: bytes) -> Response:
        if self._lose_response:
            raise LostResponse("Bad gateway")
        return envelope.raw_bytes(body)


def simulator_from(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


def gate(operation: Operation) -> Callable[[Request], Awaitable[Call]]:
    async def admit(request: Request) -> Call:
        sim = simulator_from(request)
        sim.count_request(operation)
        if not sim.authorizes(request.headers.get("authorization")):
            raise Unauthorized("Unauthorized: a valid API key is required")
        sim.admit_request()
        if sim.config.latency_ms > 0:
            await asyncio.sleep(sim.config.latency_ms / 1000)
        plan = sim.plan_faults(operation)
        if plan.error_status is not None:
            raise InjectedFault(plan.error_status, f"Simulated {operation} failure")
        if plan.timeout:
            await asyncio.sleep(sim.config.timeout_seconds)
            raise GatewayTimeout("Gateway timeout")
        return Call(sim, lose_response=plan.lose_response)

    return admit


def _messages(error: ValidationError) -> list[str]:
    messages = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        messages.append(f"{where}: {item['msg']}" if where else item["msg"])
    return messages


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidRequest(*_messages(error)) from None


async def parse_body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    data: Any = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadRequest("Malformed JSON in the request body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return validate(model, data)


def _call(operation: Operation) -> Any:
    return Depends(gate(operation))


ForkCall = Annotated[Call, _call("fork")]
CreateCall = Annotated[Call, _call("create")]
StartCall = Annotated[Call, _call("start")]
HibernateCall = Annotated[Call, _call("hibernate")]
ShutdownCall = Annotated[Call, _call("shutdown")]
DeleteCall = Annotated[Call, _call("delete")]
SpecsCall = Annotated[Call, _call("specs")]
TimeoutCall = Annotated[Call, _call("hibernation_timeout")]
ListCall = Annotated[Call, _call("list")]
GetCall = Annotated[Call, _call("get")]
RunningCall = Annotated[Call, _call("running")]
SessionsCall = Annotated[Call, _call("sessions")]
MetaCall = Annotated[Call, _call("meta")]
TokensCall = Annotated[Call, _call("tokens")]
ClustersCall = Annotated[Call, _call("clusters")]


@router.post("/sandbox/{sandbox_id}/fork")
async def fork_sandbox(sandbox_id: str, request: Request, call: ForkCall) -> Response:
    body = await parse_body(request, ForkRequest)
    vm, bootup = call.sim.fork(sandbox_id, body)
    start = None if bootup is None else views.start_json(vm, bootup, call.sim.config.cluster)
    return call.respond(
        {"id": vm.id, "alias": vm.id, "title": vm.title, "start_response": start}, 201
    )


@router.post("/sandbox")
async def create_sandbox(request: Request, call: CreateCall) -> Response:
    body = await parse_body(request, CreateRequest)
    vm = call.sim.create(body)
    return call.respond({"id": vm.id, "alias": vm.id, "title": vm.title}, 201)


@router.get("/sandbox")
async def list_sandboxes(request: Request, call: ListCall) -> Response:
    query = validate(ListQuery, dict(request.query_params))
    page, total = call.sim.list_sandboxes(query)
    more = query.page * query.effective_page_size < total
    return call.respond(
        {
            "sandboxes": [views.sandbox_json(vm) for vm in page],
            "pagination": {
                "total_records": total,
                "current_page": query.page,
                "next_page": query.page + 1 if more else None,
            },
        }
    )


@router.get("/sandbox/{sandbox_id}")
async def get_sandbox(sandbox_id: str, call: GetCall) -> Response:
    return call.respond(views.sandbox_json(call.sim.get_sandbox(sandbox_id)))


@router.post("/vm/{vm_id}/start")
async def start_vm(vm_id: str, request: Request, call: StartCall) -> Response:
    options = await parse_body(request, StartOptions)
    vm, bootup = call.sim.start(vm_id, options)
    return call.respond(views.start_json(vm, bootup, call.sim.config.cluster))


@router.post("/vm/{vm_id}/hibernate")
async def hibernate_vm(vm_id: str, call: HibernateCall) -> Response:
    call.sim.hibernate(vm_id)
    return call.respond({})


@router.post("/vm/{vm_id}/shutdown")
async def shutdown_vm(vm_id: str, call: ShutdownCall) -> Response:
    call.sim.shutdown(vm_id)
    return call.respond({})


@router.delete("/vm/{vm_id}")
async def delete_vm(vm_id: str, call: DeleteCall) -> Response:
    call.sim.delete(vm_id)
    return call.respond({})


@router.put("/vm/{vm_id}/specs")
@router.post("/vm/{vm_id}/update_specs")
async def update_specs(vm_id: str, request: Request, call: SpecsCall) -> Response:
    body = await parse_body(request, SpecsRequest)
    vm = call.sim.update_specs(vm_id, body.tier)
    return call.respond({"id": vm.id, "tier": vm.tier.value})


@router.put("/vm/{vm_id}/hibernation_timeout")
async def update_hibernation_timeout(vm_id: str, request: Request, call: TimeoutCall) -> Response:
    body = await parse_body(request, HibernationTimeoutRequest)
    vm = call.sim.update_hibernation_timeout(vm_id, body.hibernation_timeout_seconds)
    return call.respond(
        {"id": vm.id, "hibernation_timeout_seconds": vm.hibernation_timeout_seconds}
    )


@router.get("/vm/running")
async def running_vms(call: RunningCall) -> Response:
    return call.respond_raw(call.sim.running_body())


@router.get("/vm/clusters")
async def clusters(call: ClustersCall) -> Response:
    cluster = call.sim.config.cluster
    return call.respond(
        {"clusters": [{"slug": cluster, "host": f"{cluster}.pitcher.simulator.invalid"}]}
    )


@router.post("/vm/{vm_id}/sessions")
async def create_session(vm_id: str, request: Request, call: SessionsCall) -> Response:
    body = await parse_body(request, SessionRequest)
    vm = call.sim.create_session(vm_id)
    return call.respond(
        views.session_json(vm, body.session_id, body.permission, call.sim.config.cluster)
    )


@router.post("/sandbox/{sandbox_id}/tokens")
async def create_preview_token(sandbox_id: str, request: Request, call: TokensCall) -> Response:
    body = await parse_body(request, PreviewTokenRequest)
    token = call.sim.create_token(sandbox_id, body.expires_at)
    return call.respond(
        {"sandbox_id": sandbox_id, "token": views.token_json(token, with_secret=True)}, 201
    )


@router.get("/sandbox/{sandbox_id}/tokens")
async def list_preview_tokens(sandbox_id: str, call: TokensCall) -> Response:
    tokens = call.sim.list_tokens(sandbox_id)
    # 201 for a read is what the spec says the upstream answers.
    return call.respond(
        {"sandbox_id": sandbox_id, "tokens": [views.token_json(t) for t in tokens]}, 201
    )


@router.patch("/sandbox/{sandbox_id}/tokens/{token_id}")
async def update_preview_token(
    sandbox_id: str, token_id: str, request: Request, call: TokensCall
) -> Response:
    body = await parse_body(request, PreviewTokenRequest)
    token = call.sim.update_token(sandbox_id, token_id, body.expires_at)
    return call.respond({"sandbox_id": sandbox_id, "token": views.token_json(token)}, 201)


@router.delete("/sandbox/{sandbox_id}/tokens")
async def revoke_preview_tokens(sandbox_id: str, call: TokensCall) -> Response:
    call.sim.revoke_tokens(sandbox_id)
    return call.respond({})


@router.get("/meta/info")
async def meta_info(call: MetaCall) -> Response:
    # The one unwrapped answer of the API (CONTRACT §1.2).
    return call.respond_raw(json.dumps(call.sim.meta_info()).encode())
