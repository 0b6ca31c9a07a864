"""Production tokens, as Metaflow's other schedulers use them.

A deployment records its owner and production token in its runner job's Meta.
Its runs are tagged ``production:<token>``, so they form a namespace of their
own, and only the owner or someone who presents the token (``--authorize``,
cached in METAFLOW_HOME afterwards) may redeploy, delete or terminate it.
The token is a namespace name, not a credential: it grants nothing on Nomad.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from metaflow.plugins.aws.step_functions.production_token import (
    load_token,
    new_token,
    store_token,
)
from metaflow.util import get_username

from metaflow_nomad.deploy.runner_job import META_OWNER, META_PRODUCTION_TOKEN
from metaflow_nomad.errors import NomadException

PRODUCTION_PREFIX = "production:"


class NotAuthorized(NomadException):
    headline = "Incorrect production token"


def _strip(token: str | None) -> str | None:
    if token and token.startswith(PRODUCTION_PREFIX):
        return token[len(PRODUCTION_PREFIX) :]
    return token


def check_authorized(
    deployment: str,
    token_prefix: str,
    existing_meta: Mapping[str, str] | None,
    authorize: str | None,
    action: str,
) -> str | None:
    """Refuse to ``action`` another owner's deployment without its token; returns that
    token (None for a new deployment) and caches it for the next command."""
    if not existing_meta or not existing_meta.get(META_PRODUCTION_TOKEN):
        return None
    owner = existing_meta.get(META_OWNER)
    token = existing_meta[META_PRODUCTION_TOKEN]
    presented = _strip(authorize) or load_token(token_prefix)
    if owner != get_username() and presented != token:
        raise NotAuthorized(
            f"Deployment {deployment} was deployed by {owner}. To {action} it, present its "
            f"production token: --authorize <token> (ask {owner} for it, or read it from "
            "the runner job's Meta metaflow.production_token)."
        )
    store_token(token_prefix, token)
    return token


def resolve_token(
    deployment: str,
    token_prefix: str,
    existing_meta: Mapping[str, str] | None,
    authorize: str | None,
    given_token: str | None,
    generate_new: bool,
    is_project: bool,
    echo: Callable[[str], None],
) -> str:
    """The production token for a (re)deployment."""
    previous = check_authorized(deployment, token_prefix, existing_meta, authorize, "redeploy")
    if given_token:
        if is_project:
            raise NomadException(
                "--new-token is not supported with @project (its tokens have a known "
                "prefix). Use --generate-new-token."
            )
        token = _strip(given_token)
    elif previous is None or generate_new:
        token = new_token(token_prefix, previous)
        if token is None:
            raise NomadException(
                "--generate-new-token cannot follow a token given with --new-token. "
                "Use --new-token to choose a new namespace."
            )
    else:
        token = previous
    store_token(token_prefix, token)
    echo(f"The production namespace of this deployment is production:{token}")
    return token
