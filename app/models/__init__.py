"""Every table of Corral. The schema itself is owned by the Alembic migrations."""

from app.models.audit import AuditEntry
from app.models.base import Base
from app.models.sandbox import Sandbox, SandboxEvent
from app.models.team import ApiKey, Team
from app.models.usage import UsageInterval

__all__ = ["ApiKey", "AuditEntry", "Base", "Sandbox", "SandboxEvent", "Team", "UsageInterval"]
