"""Errors with stable codes.

Each class has a ``code`` (the hosted API's error code where one exists) and a message that names
the object and what to do. The engine raises them; mockcloud maps them to HTTP statuses and the
hosted envelope; the cloud backend maps envelopes back to these classes; the CLI maps classes to
exit codes. Nothing here knows about HTTP or exit codes.
"""
from __future__ import annotations


class LocalsbError(Exception):
    code = "ERROR"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class ValidationError(LocalsbError):
    code = "INVALID_ARGUMENT"


class Unauthorized(LocalsbError):
    code = "UNAUTHORIZED"


class Forbidden(LocalsbError):
    code = "FORBIDDEN"


class NotFound(LocalsbError):
    code = "RESOURCE_NOT_FOUND"


class SandboxNotFound(NotFound):
    code = "SANDBOX_NOT_FOUND"

    def __init__(self, sandbox_id: str, message: str | None = None):
        super().__init__(message or f"Sandbox not found: {sandbox_id}", sandbox_id=sandbox_id)
        self.sandbox_id = sandbox_id


class ExecutionNotFound(NotFound):
    code = "EXECUTION_NOT_FOUND"

    def __init__(self, execution_id: str):
        super().__init__(f"Execution not found: {execution_id}", execution_id=execution_id)


class SnapshotNotFound(NotFound):
    code = "SNAPSHOT_NOT_FOUND"

    def __init__(self, ref: str):
        super().__init__(f"Snapshot not found: {ref}", snapshot=ref)


class CheckpointNotFound(NotFound):
    code = "CHECKPOINT_NOT_FOUND"

    def __init__(self, sandbox_id: str, ref: str):
        super().__init__(f"Checkpoint not found: {ref} (sandbox {sandbox_id})", checkpoint=ref)


class JobNotFound(NotFound):
    code = "JOB_NOT_FOUND"

    def __init__(self, job_id: str):
        super().__init__(f"Job not found: {job_id}", job_id=job_id)


class RuntimeNotFound(NotFound):
    code = "RUNTIME_NOT_FOUND"

    def __init__(self, ref: str):
        super().__init__(
            f"Runtime not found: {ref}. Run 'localsb sandbox runtime list' to see available runtimes",
            runtime=ref)


class FileNotFoundInSandbox(NotFound):
    code = "FILE_NOT_FOUND"


class Conflict(LocalsbError):
    code = "CONFLICT"


class SandboxBusy(Conflict):
    code = "SANDBOX_BUSY"

    def __init__(self, sandbox_id: str = ""):
        super().__init__(
            "Sandbox is currently busy executing another command. Please wait for the current "
            "execution to complete before submitting a new one.", sandbox_id=sandbox_id)


class SandboxTerminated(Conflict):
    code = "SANDBOX_TERMINATED"

    def __init__(self, sandbox_id: str, status: str = "terminated"):
        super().__init__(f"Sandbox {sandbox_id} is {status}", sandbox_id=sandbox_id)


class InvalidState(Conflict):
    code = "INVALID_STATE"


class AlreadyExists(Conflict):
    code = "ALREADY_EXISTS"


class NotSupported(LocalsbError):
    code = "NOT_SUPPORTED"


class NotAvailableYet(NotSupported):
    code = "NOT_AVAILABLE"


class LimitNotEnforceable(NotSupported):
    code = "LIMIT_NOT_ENFORCEABLE"


class PayloadTooLarge(LocalsbError):
    code = "PAYLOAD_TOO_LARGE"


class HostError(LocalsbError):
    """The host refused an operation localsb needs (mount, cgroup, loop device...)."""
    code = "HOST_ERROR"


class StateError(LocalsbError):
    """The state directory cannot be used (newer schema, corrupt database)."""
    code = "STATE_ERROR"


class NetworkError(LocalsbError):
    code = "NETWORK_ERROR"


class APIError(LocalsbError):
    """An error answer from a hosted-API server whose code has no class of its own."""
    code = "API_ERROR"

    def __init__(self, message: str, status: int = 0, code: str | None = None):
        super().__init__(message, status=status)
        self.status = status
        if code:
            self.code = code


class Cancelled(LocalsbError):
    code = "CANCELLED"


class BuildFailed(LocalsbError):
    code = "BUILD_FAILED"


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def error_class_for_code(code: str | None):
    """Return the most specific class whose ``code`` is ``code`` (used by the cloud backend)."""
    if not code:
        return None
    for cls in _all_subclasses(LocalsbError):
        if cls.__dict__.get("code") == code:
            return cls
    return None


def from_code(code: str | None, message: str, status: int = 0) -> LocalsbError:
    """Rebuild an error from a wire ``code`` and ``message``, keeping the message exactly."""
    cls = error_class_for_code(code)
    if cls is None:
        if status == 404:
            cls = NotFound
        elif status == 401:
            cls = Unauthorized
        elif status == 403:
            cls = Forbidden
        elif status == 409:
            cls = Conflict
        elif status == 400 or status == 422:
            cls = ValidationError
        elif status == 413:
            cls = PayloadTooLarge
        elif status == 501:
            cls = NotSupported
        else:
            return APIError(message, status=status, code=code)
    err = LocalsbError.__new__(cls)
    LocalsbError.__init__(err, message)
    return err
