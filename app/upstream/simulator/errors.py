"""Errors the simulator answers with, rendered as the upstream's `{"errors": [...]}` envelope on
upstream paths and as `{"detail": ...}` on the `/_simulator` control paths.

    SimulatorError                  (status 500)
     ├── Unauthorized               401  missing or wrong bearer key
     ├── BadRequest                 400  the body is not JSON
     ├── InvalidRequest             422  the body or query fails the spec's schema
     ├── NotFound                   404  unknown, deleted, or another workspace's sandbox
     │    └── NotRunning            404  upstream: the VM must be running for this call
     ├── Conflict                   409  control API: the VM is not in a state that allows it
     ├── RateLimited                429  one of the three limit families is exhausted
     ├── InjectedFault              any  an `error_rate` fault, with its configured status
     ├── LostResponse               502  the work was done but the answer "never arrived"
     └── GatewayTimeout             504  a `timeout_rate` fault, after `timeout_seconds`
"""

from typing import ClassVar


class SimulatorError(Exception):
    status: ClassVar[int] = 500

    def __init__(self, *messages: str) -> None:
        super().__init__(messages[0] if messages else self.__class__.__name__)
        self.messages: list[str] = list(messages) or [self.__class__.__name__]

    @property
    def status_code(self) -> int:
        return self.status


class Unauthorized(SimulatorError):
    status = 401


class BadRequest(SimulatorError):
    status = 400


class InvalidRequest(SimulatorError):
    status = 422


class NotFound(SimulatorError):
    status = 404


class NotRunning(NotFound):
    pass


class Conflict(SimulatorError):
    status = 409


class RateLimited(SimulatorError):
    status = 429


class LostResponse(SimulatorError):
    status = 502


class GatewayTimeout(SimulatorError):
    status = 504


class InjectedFault(SimulatorError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self._status = status

    @property
    def status_code(self) -> int:
        return self._status
