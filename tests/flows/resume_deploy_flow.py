"""A deployed flow whose middle step fails until a flag file exists: a resume of the
failed run clones `start` and runs `process` and `end` again."""

import os

from metaflow import FlowSpec, Parameter, step


class ResumeDeployFlow(FlowSpec):
    flag = Parameter("flag", default="", help="`process` fails while this file is absent.")

    @step
    def start(self):
        self.start_value = "started"
        self.next(self.process)

    @step
    def process(self):
        if self.flag and not os.path.exists(self.flag):
            raise RuntimeError(f"{self.flag} is absent: failing on purpose")
        self.process_value = "processed"
        self.next(self.end)

    @step
    def end(self):
        self.end_value = "done"


if __name__ == "__main__":
    ResumeDeployFlow()
