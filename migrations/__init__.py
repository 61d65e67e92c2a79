"""The Alembic migrations, installed as the `app.migrations` package (see pyproject.toml).

A regular package, so that importlib.resources gives app/db.py its directory on disk."""
