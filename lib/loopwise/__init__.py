"""loopwise: self-hosted real-time smart strategies.

Import root for the generated API stubs (``loopwise.<area>.v1``), the client SDK
(:class:`loopwise.Client`, :class:`loopwise.AsyncClient`, the operation errors and
:func:`loopwise.operation_result`) and the shared library.
"""

__version__ = "0.1.0"

_SDK = ("AsyncClient", "Client", "OperationCancelled", "OperationFailed", "OperationTimeout",
        "operation_result")

__all__ = [*_SDK, "__version__"]


def __getattr__(name: str):  # lazy, so that importing a stub does not load the SDK
    if name in _SDK:
        from loopwise import client

        return getattr(client, name)
    raise AttributeError(name)
