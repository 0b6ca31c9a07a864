"""A @project flow: each branch, and production, is a deployment of its own."""

from metaflow import FlowSpec, current, project, step


@project(name="forecast")
class ProjectDeployFlow(FlowSpec):
    @step
    def start(self):
        self.branch = current.branch_name
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ProjectDeployFlow()
