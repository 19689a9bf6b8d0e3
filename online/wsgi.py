"""WSGI entry point for gunicorn: ``gunicorn online.wsgi:app`` (settings from RECSYS_* variables)."""

from online.app import create_app

app = create_app()
