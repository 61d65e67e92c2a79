from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, MetaData, Table
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names, so migrations can refer to them and `alembic check` stays quiet.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def table_of(model: type[Base]) -> Table:
    """A model's table, for Core statements that need none of the ORM's per-row work."""
    return Base.metadata.tables[model.__tablename__]
