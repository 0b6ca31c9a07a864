"""@project on a flow whose step runs on Nomad."""

from metaflow import FlowSpec, current, nomad, project, step


@project(name="nomad_parity")
class ProjectFlow(FlowSpec):
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        self.project_seen = {
            "project_name": current.project_name,
            "branch_name": current.branch_name,
            "project_flow_name": current.project_flow_name,
            "is_production": current.is_production,
        }
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ProjectFlow()
