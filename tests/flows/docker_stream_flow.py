"""Prints, then waits for the test's go-ahead (an S3 object), then prints again: the
first line can only reach the launcher while the task is still running.  The
task runs in a container that shares nothing with the test but the S3 server."""

import os
import time

from metaflow import FlowSpec, current, nomad, step


class DockerStreamFlow(FlowSpec):
    @nomad(cpu=100, memory=600)
    @step
    def start(self):
        import boto3

        print("STREAM-FIRST", flush=True)
        bucket, _, prefix = os.environ["METAFLOW_DATASTORE_SYSROOT_S3"][5:].partition("/")
        s3 = boto3.client("s3", endpoint_url=os.environ["METAFLOW_S3_ENDPOINT_URL"])
        key = f"{prefix}/go-ahead/{current.run_id}"
        deadline = time.monotonic() + 180
        while "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key):
            if time.monotonic() > deadline:
                raise RuntimeError("the test never saw the first line")
            time.sleep(0.2)
        print("STREAM-SECOND", flush=True)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    DockerStreamFlow()
