"""The admin dashboard (DESIGN §14): server-rendered pages at /dashboard on Corral's own
services; `app.dashboard.site` says how it is mounted and guarded."""
