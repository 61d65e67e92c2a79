"""A faithful in-process fake of the CodeSandbox VM sandbox API, with a control API for tests.

See DESIGN §9 and CONTRACT.md; each module's docstring states the choices it makes where the
contract is silent or marked [I]/[?].
"""

from app.upstream.simulator.app import create_simulator_app, simulator_of
from app.upstream.simulator.config import FaultConfig, Operation, SimulatorConfig
from app.upstream.simulator.state import Simulator
from app.upstream.simulator.tiers import TIER_SPECS, Tier

__all__ = [
    "TIER_SPECS",
    "FaultConfig",
    "Operation",
    "Simulator",
    "SimulatorConfig",
    "Tier",
    "create_simulator_app",
    "simulator_of",
]
