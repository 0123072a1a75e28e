"""Hub problems as one line that says what to do (gated repo, bad pin, offline, network)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..errors import ReproError


class HubError(ReproError, RuntimeError):
    """A download problem, in one line that says what to do."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().upper() in ("1", "ON", "YES", "TRUE")


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None, repo_type: str = "model") -> Iterator[None]:
    """Turn huggingface_hub / datasets / network exceptions into one clear HubError."""
    from huggingface_hub import errors as e

    what = f"{repo_type} {repo_id}@{revision or 'main'}"
    try:
        yield
    except e.GatedRepoError:
        raise HubError(
            f"{what} is gated: accept its license on huggingface.co and provide a token "
            "(HF_TOKEN in the environment or `hf auth login`)"
        ) from None
    except e.RevisionNotFoundError:
        raise HubError(
            f"{what}: revision {revision!r} does not exist (check the pinned sha)"
        ) from None
    except e.RepositoryNotFoundError:
        raise HubError(
            f"{what}: repository not found (typo in the id, or private without a valid token)"
        ) from None
    except e.RemoteEntryNotFoundError as exc:
        raise HubError(f"{what}: file not found on the hub ({exc.__class__.__name__})") from None
    except (e.LocalEntryNotFoundError, e.OfflineModeIsEnabled):
        raise HubError(
            f"{what} is not in the local Hugging Face cache and the hub cannot be reached "
            "(no network or HF_HUB_OFFLINE=1); pre-populate HF_HOME/HF_HUB_CACHE or use a "
            "local_path"
        ) from None
    except Exception as exc:
        if _is_network_error(exc):
            raise HubError(
                f"{what}: cannot reach the Hugging Face hub ({type(exc).__name__}); check the "
                "network or run offline from a populated cache (HF_HUB_OFFLINE=1)"
            ) from None
        if type(exc).__name__ == "DatasetNotFoundError":
            raise HubError(f"{what}: dataset or revision not found ({exc})") from None
        raise


def _is_network_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(
        names
        & {
            "ConnectError",
            "ConnectTimeout",
            "TimeoutException",
            "NetworkError",
            "ConnectionError",
            "ReadTimeout",
            "ProxyError",
        }
    )
