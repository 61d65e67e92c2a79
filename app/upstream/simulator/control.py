"""The `/_simulator` control API: what tests and benchmarks use to drive and inspect the fake.

The real upstream has nothing like it. It needs no key (it is a test surface; an upstream key
sent along is ignored), has no faults or latency, and does not count against any limit — except
that a VM started or woken through it still obeys `concurrent_vm_limit`, as it would upstream.
Errors are FastAPI-style `{"detail": ...}`: 404 unknown VM, 409 a VM in the wrong state, 429 at
the concurrency limit, 422 a bad body (unknown fields included).
"""

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from starlette.responses import Response

from app.upstream.simulator import envelope, views
from app.upstream.simulator.config import ConfigUpdate
from app.upstream.simulator.routes import simulator_from
from app.upstream.simulator.schemas import ClockAdvance, OutsideVmRequest, WakeRequest
from app.upstream.simulator.state import Simulator
from app.upstream.simulator.vm import VmState

CONTROL_PREFIX = "/_simulator"

router = APIRouter(prefix=CONTROL_PREFIX)

SimulatorDep = Annotated[Simulator, Depends(simulator_from)]


def _clock_json(sim: Simulator) -> dict[str, object]:
    return {
        "now": views.iso(sim.clock.now()),
        "offset_seconds": sim.clock.offset_seconds,
        "frozen": sim.clock.frozen,
    }


@router.get("/clock")
async def read_clock(sim: SimulatorDep) -> Response:
    return envelope.raw(_clock_json(sim))


@router.post("/clock/advance")
async def advance_clock(body: ClockAdvance, sim: SimulatorDep) -> Response:
    sim.clock.advance(body.seconds)
    hibernated = sim.expire_idle()
    return envelope.raw({**_clock_json(sim), "hibernated": hibernated})


@router.post("/clock/freeze")
async def freeze_clock(sim: SimulatorDep) -> Response:
    sim.clock.freeze()
    return envelope.raw(_clock_json(sim))


@router.post("/clock/unfreeze")
async def unfreeze_clock(sim: SimulatorDep) -> Response:
    sim.clock.unfreeze()
    return envelope.raw(_clock_json(sim))


@router.get("/config")
async def read_config(sim: SimulatorDep) -> Response:
    return envelope.raw(sim.config.model_dump(mode="json"))


@router.put("/config")
async def update_config(body: ConfigUpdate, sim: SimulatorDep) -> Response:
    return envelope.raw(sim.update_config(body).model_dump(mode="json"))


@router.post("/reset")
async def reset(sim: SimulatorDep) -> Response:
    sim.reset()
    return envelope.raw(sim.config.model_dump(mode="json"))


@router.get("/requests")
async def request_counts(sim: SimulatorDep) -> Response:
    return envelope.raw(dict(sim.request_counts))


@router.get("/vms")
async def list_vms(sim: SimulatorDep, state: VmState | None = None) -> Response:
    now = sim.clock.now()
    vms = [
        views.vm_control_json(vm, now) for vm in sim.all_vms() if state is None or vm.state is state
    ]
    return envelope.raw({"vms": vms})


@router.post("/vms", status_code=201)
async def start_outside_vm(body: OutsideVmRequest, sim: SimulatorDep) -> Response:
    vm = sim.start_outside(body)
    return envelope.raw(views.vm_control_json(vm, sim.clock.now()), 201)


@router.get("/vms/{vm_id}")
async def read_vm(vm_id: str, sim: SimulatorDep) -> Response:
    return envelope.raw(views.vm_control_json(sim.find_vm(vm_id), sim.clock.now()))


@router.post("/vms/{vm_id}/touch")
async def touch_vm(vm_id: str, sim: SimulatorDep) -> Response:
    return envelope.raw(views.vm_control_json(sim.touch(vm_id), sim.clock.now()))


@router.post("/vms/{vm_id}/wake")
async def wake_vm(
    vm_id: str, sim: SimulatorDep, body: Annotated[WakeRequest | None, Body()] = None
) -> Response:
    vm = sim.wake(vm_id, via=(body or WakeRequest()).via)
    return envelope.raw(views.vm_control_json(vm, sim.clock.now()))
