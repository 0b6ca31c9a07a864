"""A @parallel (multi-node) step, as users write one for distributed training.

Each node records and prints what ``current.parallel`` says of it; the join reads
every node's task through the client API.  ``--fail-node I`` makes node I fail its
first attempt while the other nodes wait (they would run for ten minutes): the
gang must fail and stop as one unit, and @retry rerun it whole.
"""

import os
import time

from metaflow import FlowSpec, Parameter, current, parallel, retry, step

NUM_NODES = 3


class ParallelFlow(FlowSpec):
    fail_node = Parameter("fail-node", default=-1, type=int, help="node failing attempt 0")

    @step
    def start(self):
        self.next(self.train, num_parallel=NUM_NODES)

    @retry(times=1, minutes_between_retries=0)
    @parallel
    @step
    def train(self):
        info = current.parallel
        self.node = info.node_index
        self.num_nodes = info.num_nodes
        self.main_ip = info.main_ip
        self.main_port = os.environ.get("MF_PARALLEL_MAIN_PORT")
        self.control_task_id = info.control_task_id
        self.attempt = current.retry_count
        print(
            f"NODE index={info.node_index} num_nodes={info.num_nodes} "
            f"main={info.main_ip}:{self.main_port} task={current.task_id} "
            f"attempt={current.retry_count}",
            flush=True,
        )
        if self.fail_node >= 0 and current.retry_count == 0:
            if info.node_index == self.fail_node:
                raise RuntimeError(f"node {info.node_index} fails on purpose")
            time.sleep(600)
        self.next(self.join)

    @step
    def join(self, inputs):
        from metaflow import Step, namespace

        self.nodes = sorted(i.node for i in inputs)
        namespace(None)
        train = Step(f"{current.flow_name}/{current.run_id}/train")
        self.client_nodes = sorted((task.id, task.data.node, task.data.main_ip) for task in train)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ParallelFlow()
