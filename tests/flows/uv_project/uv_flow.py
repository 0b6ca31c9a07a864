"""A flow run with ``--environment=uv``: its step imports ``inflection``, which only
this directory's ``uv.lock`` provides (neither the launcher's Python nor the docker
image has it), and stores the version it found.  ``end`` runs locally, under ``uv run`` in the
project's own ``.venv`` (where the user's Metaflow is)."""

from metaflow import FlowSpec, nomad, step


class UvFlow(FlowSpec):
    @nomad(memory=512)
    @step
    def start(self):
        import inflection

        self.inflection_version = inflection.__version__
        print(f"inflection {self.inflection_version} from uv.lock")
        self.next(self.end)

    @step
    def end(self):
        print(f"end step: inflection {self.inflection_version}")


if __name__ == "__main__":
    UvFlow()
