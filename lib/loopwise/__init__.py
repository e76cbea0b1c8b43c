"""loopwise: self-hosted real-time smart strategies.

Import root for the generated API stubs (``loopwise.<area>.v1``), the client SDK
(:class:`loopwise.Client`, :class:`loopwise.AsyncClient`, the operation errors,
:func:`loopwise.operation_result` and :func:`loopwise.uuid7_at`), the errors a failed
call raises (:class:`loopwise.LoopwiseError` and one class per status code, from
:mod:`loopwise.client_errors`) and the shared library.
"""

__version__ = "0.1.0"

_SDK = ("AsyncClient", "Client", "DecisionUnavailable", "ModelArtifact", "OperationCancelled",
        "OperationFailed", "OperationTimeout", "Outcome", "operation_result", "uuid7_at")
_ERRORS = ("AlreadyExists", "Cancelled", "DeadlineExceeded", "FailedPrecondition", "Internal",
           "InvalidArgument", "LoopwiseError", "NotFound", "PermissionDenied", "ResourceExhausted",
           "Unauthenticated", "Unavailable", "Unimplemented")

__all__ = [*_SDK, *_ERRORS, "__version__"]


def __getattr__(name: str):  # lazy, so that importing a stub does not load the SDK
    if name in _SDK:
        from loopwise import client

        return getattr(client, name)
    if name in _ERRORS:
        from loopwise import client_errors

        return getattr(client_errors, name)
    raise AttributeError(name)
