"""One allocation per attempt: the first allocation of an attempt's job claims it.

Nomad 1.6 replaces a lost allocation of a batch job inside the same job,
whatever its reschedule policy: a node that stops heartbeating (a dead machine,
a network partition, a frozen agent) has its allocations marked lost and run
again elsewhere, even when the first run has finished.  A second run of the same
attempt would write the attempt's artifacts, metadata and logs again.

So before a task writes anything of its attempt, it records its allocation ID
next to the attempt's files with an exclusive create; an allocation that finds
another allocation's claim exits at once (``CLAIMED_ELSEWHERE``) and writes
nothing.  With the local datastore the bootstrap claims in bash (``set -C``,
see ``render.bootstrap``); with S3 the capture process claims with a
conditional put (``If-None-Match: *``) before it starts the step.
"""

from __future__ import annotations

import sys

from metaflow_nomad.model import CLAIMED_ELSEWHERE, claim_refusal


def claim_s3(url: str, alloc_id: str) -> str | None:
    """Claim ``url`` (``s3://bucket/key``) for ``alloc_id``; None when this allocation
    holds the claim, else the allocation that does."""
    from botocore.exceptions import ClientError
    from metaflow.plugins.datatools.s3.s3util import get_s3_client

    client, _ = get_s3_client()
    bucket, _, key = url[len("s3://") :].partition("/")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=alloc_id.encode(), IfNoneMatch="*")
        return None
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
            raise
    holder = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return None if holder == alloc_id else holder


def claim_before_step(url: str | None, alloc_id: str | None) -> int | None:
    """In the capture process of a task with a remote datastore: the exit status
    (``CLAIMED_ELSEWHERE``) if another allocation holds the attempt, else None."""
    if not url or not alloc_id or not url.startswith("s3://"):
        return None
    holder = claim_s3(url, alloc_id)
    if holder is None:
        return None
    sys.stderr.write(claim_refusal(url, holder) + "\n")
    return CLAIMED_ELSEWHERE
