"""WSGI entry point for another WSGI server: ``gunicorn online.wsgi:app`` (settings from the RECSYS_* variables
and their defaults; ``python -m online.serve`` passes its flags to the app instead)."""

from online.app import create_app

app = create_app()
