"""A flow with a schedule (far in the future: the test forces the launch)."""

from metaflow import FlowSpec, Parameter, schedule, step


@schedule(cron="0 3 1 1 *", timezone="Europe/Paris")
class ScheduledFlow(FlowSpec):
    size = Parameter("size", default=3, type=int)

    @step
    def start(self):
        self.squares = [i * i for i in range(self.size)]
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ScheduledFlow()
