"""loopwise console: a web application where product engineers see and steer their
strategies (docs/console.md).

A process of its own (``loopwise console`` or ``python -m loopwise.console``) that
serves server-rendered pages (Starlette, Jinja2, uvicorn) and talks to the four
services only through their gRPC API, with the SDK's :class:`loopwise.AsyncClient`,
over the console's TLS client certificate and with the bearer token of the user who
logged in: the services' scope checks decide what each user sees and may change.
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):  # the web stack is imported only when it is used
    if name in __all__:
        from loopwise.console import app

        return getattr(app, name)
    raise AttributeError(name)
