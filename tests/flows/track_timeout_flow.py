"""@timeout on Nomad; with --ignore-alarm the step defeats the in-task timeout."""

import signal
import time

from metaflow import FlowSpec, Parameter, nomad, step, timeout


class TrackTimeoutFlow(FlowSpec):
    ignore_alarm = Parameter("ignore-alarm", type=bool, default=False)

    @timeout(seconds=2)
    @nomad(cpu=100, memory=256)
    @step
    def start(self):
        if self.ignore_alarm:
            signal.signal(signal.SIGALRM, signal.SIG_IGN)
        print("sleeping past the timeout", flush=True)
        time.sleep(60)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    TrackTimeoutFlow()
