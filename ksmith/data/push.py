"""Upload a generated dataset folder to the Hugging Face Hub."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ksmith.data.card import read_card
from ksmith.io import MARKER

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def push_dataset(
    directory: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Create (if needed) the dataset repo `repo_id` and upload `directory` to it.

    The folder is checked first (its card must carry a ksmith fingerprint); the local marker file
    is not uploaded. Returns the commit URL reported by the Hub.
    """
    from huggingface_hub import HfApi

    from ksmith.errors import KsmithError

    directory = Path(directory)
    if not _REPO_ID.match(repo_id):
        raise KsmithError(f"--repo-id '{repo_id}': expected ORG/NAME")
    card = read_card(directory)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    log.info("uploading %s (fingerprint %s) to %s", directory, card["fingerprint"], repo_id)
    info = api.upload_folder(
        folder_path=str(directory),
        repo_id=repo_id,
        repo_type="dataset",
        ignore_patterns=[MARKER],
        commit_message=f"ksmith suite {card['suite']} ({card['fingerprint'][:12]})",
    )
    return str(getattr(info, "commit_url", info))
