"""Fetch a Metaflow code package from S3 inside a Nomad task, before Metaflow is there.

The task's bootstrap runs this file's source as ``python - URL DEST`` (it travels
inside the bootstrap script, so it needs nothing but boto3).  Metaflow's own
download retries every failure six times, ten seconds apart: a task without
credentials takes a minute to fail and then prints six tracebacks.  Here a failure
that retrying cannot fix ends the task at once with one line that says what to
check; only connection errors and server errors are retried.  The line starts with
``metaflow-nomad: ``, which the launcher looks for in the task's raw output.
"""

import os
import sys
import time

ATTEMPTS = 3
PAUSE_S = 5
MARKER = "metaflow-nomad: "
CREDENTIALS = (
    "Credentials reach a task through a Nomad Variable or Vault template, or the "
    "node's environment or credentials file (see docs/s3.md)."
)
DENIED = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}
MISSING = {"404", "NoSuchKey", "NoSuchBucket"}


def classify(exc, endpoint):
    """(worth retrying, what went wrong, what to check) for a download error."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return False, "the task has no AWS credentials", CREDENTIALS
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in DENIED:
            return (
                False,
                f"access denied ({code})",
                "Its credentials may not read it. " + CREDENTIALS,
            )
        if code in MISSING:
            return (
                False,
                f"not found ({code})",
                "The task sees another datastore than the launcher: check "
                "METAFLOW_DATASTORE_SYSROOT_S3 and METAFLOW_S3_ENDPOINT_URL.",
            )
        return True, f"S3 answered {code or exc}", "Check the S3 service."
    if isinstance(exc, BotoCoreError):
        where = endpoint or "S3"
        return (
            True,
            str(exc),
            f"Check that {where} is reachable from the Nomad client nodes "
            "(METAFLOW_S3_ENDPOINT_URL for S3-compatible stores).",
        )
    return False, repr(exc), "See the error above."


def fail(url, reason, what_to_check):
    sys.stderr.write(
        f"{MARKER}the code package could not be fetched from {url}: {reason}. {what_to_check}\n"
    )
    sys.exit(1)


def main(url, dest):
    bucket, _, key = url[len("s3://") :].partition("/")
    try:
        import boto3
    except ImportError:
        fail(
            url,
            "the task's Python has no boto3",
            "Use an image with boto3, or let the bootstrap install it "
            "(unset METAFLOW_SKIP_INSTALL_DEPENDENCIES).",
        )
    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or None
    client = boto3.client("s3", **({"endpoint_url": endpoint} if endpoint else {}))
    for attempt in range(1, ATTEMPTS + 1):
        try:
            client.download_file(bucket, key, dest)
            return
        except Exception as exc:  # classified: permanent ones end the task at once
            retry, reason, what_to_check = classify(exc, endpoint)
            if not retry or attempt == ATTEMPTS:
                fail(url, reason, what_to_check)
        time.sleep(PAUSE_S)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
