"""ASGI entry for gunicorn's uvicorn workers (imported in each worker, after fork; never preload
it)."""

from adapter.app import create_app_from_env

app = create_app_from_env()
